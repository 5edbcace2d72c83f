/**
 * The one Fastify server every door is registered on: request ids, timeouts, body limit, Ajv, and
 * the refusals made before any door has the request (node:http's own, a bad URL, no route). Which
 * body those refusals carry is given by the composition (build-api.ts): the native API's.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { problemOnSocket } from './client-error.js';
import { requestTurns } from '../../io/turn-budget.js';

/** How a door answers an error (its own error table and body shape). */
export type ErrorReply = (req: FastifyRequest, reply: FastifyReply, err: unknown) => FastifyReply;

export interface HttpServerOptions {
  logger?: boolean;
  /** errors outside every door: framework errors before routing */
  errorReply: ErrorReply;
  /** no door has a route for the request */
  notFound: (req: FastifyRequest, reply: FastifyReply) => void;
  /** resolves once the catalog's commits so far are on disk (awaited before answering a change) */
  durable?: () => Promise<void>;
}

/** `…/upload/imagoup_<id>_<secret>` → `…/upload/imagoup_<id>_***` */
export function withoutUploadSecret(url: string): string {
  return url.replace(/(imagoup_[0-9a-f]{16})_[A-Za-z0-9_-]+/g, '$1_***');
}

export function createHttpServer(opts: HttpServerOptions): FastifyInstance {
  const app = Fastify({
    logger: opts.logger
      ? {
          level: 'info',
          // an upload URL carries its token in the path: the log keeps its id, not its secret
          serializers: {
            req: (req: FastifyRequest) => ({ method: req.method, url: withoutUploadSecret(req.url), host: req.host, remoteAddress: req.ip }),
          },
        }
      : false,
    // a caller's x-request-id is kept when it is a plain token, so logs on both sides line up
    genReqId: (req) =>
      typeof req.headers['x-request-id'] === 'string' && /^[\w.-]{1,64}$/.test(req.headers['x-request-id']) ? req.headers['x-request-id'] : randomUUID(),
    // node's whole-request limit would kill a large, slow but steady upload: bodies have an idle timeout instead
    requestTimeout: 0,
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    exposeHeadRoutes: false,
    // querystrings need coercion (?limit=10, one ?state=x as an array); bodies are checked strictly first (strict-body.ts)
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    // errors Fastify and node:http produce before a handler runs get an error body too
    frameworkErrors: (err, req, reply) => void opts.errorReply(req, reply, err),
    clientErrorHandler: problemOnSocket,
  });
  app.setErrorHandler((err: unknown, req, reply) => opts.errorReply(req, reply, err));
  // the first hook of every request: a burst of them is spread over loop turns (turn-budget.ts)
  app.addHook('onRequest', (_req, _reply, done) => {
    const wait = requestTurns.enter();
    if (wait) void wait.then(() => done());
    else done();
  });
  const durable = opts.durable;
  if (durable) {
    // a request that may have changed something is answered once its changes are durable; reads
    // (GET, HEAD) are not held up
    app.addHook('onSend', async (req) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') await durable();
    });
  }
  app.setNotFoundHandler(opts.notFound);
  return app;
}
