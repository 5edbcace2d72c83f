/**
 * `/api/v1/events`: server-sent events of image state and progress changes, each checked against
 * what the stream's principal may see. Open streams never end by themselves: a stopping server
 * ends them (event: shutdown), or close() would wait forever.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Authenticator } from '../../domain/access/authenticator.js';
import type { Authorizer } from '../../domain/access/authorizer.js';
import { DomainError } from '../../domain/errors.js';
import type { ImageChange, ImageEvents } from '../../domain/images/events.js';
import { problem } from '../http/problem.js';
import { header } from '../http/request-header.js';
import { STATUS_OF } from './error-table.js';
import { imageJson } from './image-json.js';

export interface EventRoutesOptions {
  authenticator: Authenticator;
  authorizer: Authorizer;
  events: ImageEvents;
  /** an open stream re-checks its credentials this often */
  recheckMs: number;
}

/** Bytes an event stream may have waiting for a client that does not read before it is cut off. */
const SSE_MAX_BUFFERED_BYTES = 1024 * 1024;

export const eventRoutes: FastifyPluginAsyncTypebox<EventRoutesOptions> = async (app, { authenticator, authorizer, events, recheckMs }) => {
  const openStreams = new Set<() => void>();

  app.get(
    '/events',
    {
      schema: {
        summary: 'Server-sent events: image state and progress changes',
        tags: ['images'],
        querystring: Type.Object({ image: Type.Optional(Type.String({ description: 'only this image id' })) }),
        produces: ['text/event-stream'],
      },
    },
    (req, reply) => {
      const only = req.query.image;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      res.write(': imago events\n\n');
      // The stream outlives the moment its credentials were checked: they are checked again every
      // recheckMs and before each event, so a revoked token or a deleted user stops receiving
      // within seconds (and never receives an event after the revocation is seen).
      const authorization = header(req, 'authorization');
      let principal = req.principal;
      let ended = false;
      let checking: Promise<boolean> | undefined;
      const cleanup = () => {
        clearInterval(ping);
        clearInterval(recheckTimer);
        unsubscribe();
      };
      const endWith = (err: unknown) => {
        if (ended) return;
        ended = true;
        cleanup();
        const detail =
          err instanceof DomainError
            ? `${err.message}; this event stream has ended — reconnect with valid credentials`
            : 'the credentials of this event stream could not be checked again; reconnect';
        const code = err instanceof DomainError ? err.code : 'UNAVAILABLE';
        const body = problem(code, err instanceof DomainError ? STATUS_OF[err.code] : 503, detail, req.id);
        res.once('finish', () => res.socket?.end());
        res.end(`event: error\ndata: ${JSON.stringify(body)}\n\n`);
      };
      const recheck = (): Promise<boolean> =>
        (checking ??= authenticator
          .authenticate(authorization)
          .then(
            (p) => {
              principal = p;
              return true;
            },
            (e: unknown) => {
              endWith(e);
              return false;
            },
          )
          .finally(() => (checking = undefined)));
      let delivering = Promise.resolve();
      const send = async (c: ImageChange) => {
        if (ended || (only && c.image.id !== only)) return;
        if (!(await recheck()) || ended) return;
        if (!(await authorizer.canSee(principal, c.image).catch(() => false)) || ended) return;
        // a client that stops reading would make us buffer every later event: cut it off instead
        if (res.writableLength > SSE_MAX_BUFFERED_BYTES) {
          endWith(new DomainError('REQUEST_TIMEOUT', `this event stream was not read (over ${SSE_MAX_BUFFERED_BYTES} bytes waiting); reconnect and read it`));
          res.destroy();
          return;
        }
        res.write(`id: ${c.seq}\nevent: ${c.type}\ndata: ${JSON.stringify({ type: c.type, at: c.at.toISOString(), image: imageJson(c.image) })}\n\n`);
      };
      // one event at a time, in order
      const unsubscribe = events.subscribe((c) => void (delivering = delivering.then(() => send(c)).catch(() => undefined)));
      const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
      const recheckTimer = setInterval(() => void recheck(), recheckMs);
      const closeForShutdown = () => {
        if (ended) return;
        ended = true;
        cleanup();
        res.end('event: shutdown\ndata: {"detail":"the server is stopping; reconnect"}\n\n');
        res.socket?.end();
      };
      openStreams.add(closeForShutdown);
      res.on('close', () => {
        ended = true;
        openStreams.delete(closeForShutdown);
        cleanup();
      });
    },
  );

  app.addHook('preClose', async () => {
    for (const close of [...openStreams]) close();
  });
};
