/**
 * The HTTP edge (Fastify): the native REST API under /api/v1. Handlers validate, call the domain,
 * shape the reply; domain errors become problem+json through one mapping (problem.ts).
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { DomainError } from '../domain/errors.js';
import { ANONYMOUS, MEMBER_STATUSES, VISIBILITIES, type Principal } from '../domain/access.js';
import type { AccessService } from '../domain/access-service.js';
import type { ImageChange, ImageEvents } from '../domain/images/events.js';
import { parseCreateInput, parseUpdateInput, takeOwnership } from '../domain/images/image-input.js';
import { parseConvertTarget } from '../domain/images/variants.js';
import type { ImageQuery, ImageSortKey } from '../domain/images/image.js';
import type { ByteRange } from '../store/blob-store.js';
import { ctxOf, registerAccessRoutes } from './access-routes.js';
import { IMAGE_SCHEMA, imageJson } from './image-json.js';
import { bodyWithIdleTimeout, withBodyIdleTimeout } from './body-idle-timeout.js';
import { problemOnSocket } from './client-error.js';
import { assertBodyTypes } from './strict-body.js';
import { collectOpenApi } from './openapi.js';
import { problem, STATUS_OF } from './problem.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyContextConfig {
    /** the handler streams the raw body itself (image bytes); no parser reads it */
    rawBody?: boolean;
  }
}

export interface ApiDeps {
  access: AccessService;
  events: ImageEvents;
  /** extra routes (import, GC) registered by the composition root */
  extend?: (app: FastifyInstance) => void;
  logger?: boolean;
  /** a request body idle this long is cut off (default 60 s) */
  bodyIdleTimeoutMs?: number;
  /** an open event stream re-checks its credentials this often (default 3 s) */
  eventsRecheckMs?: number;
}

const idParam = { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 64 } } } as const;
const imageResponse = { ...IMAGE_SCHEMA, description: 'the image' };
const arr = (description: string) => ({ type: 'array', items: { type: 'string' }, description }) as const;

export function buildApi(deps: ApiDeps): FastifyInstance {
  const bodyIdleTimeoutMs = deps.bodyIdleTimeoutMs ?? 60_000;
  const eventsRecheckMs = deps.eventsRecheckMs ?? 3_000;
  // open event streams never end by themselves: a stopping server ends them, or close() waits forever
  const openStreams = new Set<() => void>();
  const app = Fastify({
    logger: deps.logger ? { level: 'info' } : false,
    genReqId: (req) => (typeof req.headers['x-request-id'] === 'string' && /^[\w.-]{1,64}$/.test(req.headers['x-request-id']) ? req.headers['x-request-id'] : randomUUID()),
    requestTimeout: 0,
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    exposeHeadRoutes: false,
    // querystrings need coercion (?limit=10, one ?state=x as an array); bodies are checked strictly first (strict-body.ts)
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    // errors Fastify and node:http produce before a handler runs get the one problem+json shape
    frameworkErrors: (err, req, reply) => void sendError(req, reply, err),
    clientErrorHandler: problemOnSocket,
  });
  const openapi = collectOpenApi(app);

  // Raw bodies (image bytes) are streamed by their handlers, never buffered. Every other route
  // takes JSON only (Fastify's text/plain parser would hand a JSON route a string).
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('*', (req, _payload, done) => {
    if (req.routeOptions.config.rawBody) return done(null, undefined);
    const type = header(req, 'content-type');
    done(
      new DomainError(
        'UNSUPPORTED_MEDIA_TYPE',
        `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]} takes a JSON body${type === undefined ? ', and this one has no Content-Type' : `, not ${type.slice(0, 100)}`}; send it with Content-Type: application/json`,
        { accepted: ['application/json'] },
      ),
      undefined,
    );
  });
  // a JSON body that stops arriving is cut off like an upload (uploads: withBodyIdleTimeout in their route)
  app.addHook('preParsing', async (req, _reply, payload) => {
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    return hasBody && !req.routeOptions.config.rawBody ? bodyWithIdleTimeout(payload, bodyIdleTimeoutMs) : payload;
  });
  app.addHook('preValidation', async (req) => {
    const schema = req.routeOptions.schema?.body as Parameters<typeof assertBodyTypes>[0] | undefined;
    if (schema && req.body !== undefined) assertBodyTypes(schema, req.body);
  });

  app.setErrorHandler((err: unknown, req, reply) => sendError(req, reply, err));
  app.setNotFoundHandler((req, reply) => {
    void reply
      .code(404)
      .type('application/problem+json')
      .send(problem('NOT_FOUND', 404, `no route for ${req.method} ${req.url.split('?')[0]}; see /api/v1/openapi.json`, req.id));
  });

  // Every request is authenticated once, before its handler (and before an upload body is read):
  // bad credentials are a 401, never silently anonymous. Liveness and the API description are open.
  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0];
    if (path === '/api/v1/healthz' || path === '/api/v1/openapi.json') {
      req.principal = ANONYMOUS;
      return;
    }
    req.principal = await deps.access.authenticate(header(req, 'authorization'));
  });

  app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => openapi());
  app.get('/api/v1/healthz', { schema: { summary: 'liveness', tags: ['meta'] } }, async () => ({ status: 'ok' }));

  app.post(
    '/api/v1/images',
    {
      schema: {
        summary: 'Create an image (metadata only; upload or import the bytes next)',
        tags: ['images'],
        headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', maxLength: 255, description: 'retries with the same key return the first image' } } },
        body: {
          type: 'object',
          additionalProperties: true,
          properties: {
            name: { type: 'string' },
            project: { type: ['string', 'null'], description: 'owning project (default: your only project); null = cluster scope (server admins)' },
            visibility: { type: 'string', enum: [...VISIBILITIES], description: 'default project (private when project is null; only private or public then)' },
          },
        },
        response: { 201: imageResponse, 200: { ...IMAGE_SCHEMA, description: 'the image created by an earlier request with this Idempotency-Key' } },
      },
    },
    async (req, reply) => {
      const { rest, ownership } = takeOwnership(req.body);
      const input = parseCreateInput(rest);
      const key = header(req, 'idempotency-key');
      const { image, replayed } = await deps.access.createImage(ctxOf(req), input, ownership, key);
      void reply.code(replayed ? 200 : 201).header('location', `/api/v1/images/${image.id}`);
      return imageJson(image);
    },
  );

  app.get(
    '/api/v1/images',
    {
      schema: {
        summary: 'List images with filters, sort and cursor pagination',
        tags: ['images'],
        querystring: {
          type: 'object',
          properties: {
            name: { type: 'string', description: 'exact name, or a prefix ending in *' },
            state: arr('pending, importing, ready, disabled, error, locked (repeat or comma-separate)'),
            type: arr('OS, CDROM, DATABLOCK, KERNEL, RAMDISK, CONTEXT'),
            diskFormat: arr('raw, qcow2, vmdk, ...'),
            tag: arr('every tag must be present'),
            property: arr('key=value; every one must match'),
            createdAfter: { type: 'string', format: 'date-time' },
            createdBefore: { type: 'string', format: 'date-time' },
            updatedAfter: { type: 'string', format: 'date-time' },
            updatedBefore: { type: 'string', format: 'date-time' },
            sort: { type: 'string', description: 'name|createdAt|updatedAt|storedSize|virtualSize[:asc|desc]' },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', description: 'nextCursor of the previous page' },
            project: { type: 'string', description: 'only images of this project' },
            visibility: arr('private, project, shared, public'),
            memberStatus: { type: 'string', enum: [...MEMBER_STATUSES], description: 'images shared with your projects with this member status (offers: pending)' },
          },
        },
        response: { 200: { type: 'object', properties: { images: { type: 'array', items: IMAGE_SCHEMA }, nextCursor: { type: 'string' } } } },
      },
    },
    async (req) => {
      const page = await deps.access.listImages(ctxOf(req), parseListQuery(req.query as Record<string, unknown>));
      return { images: page.items.map(imageJson), nextCursor: page.nextCursor };
    },
  );

  app.get('/api/v1/images/:id', { schema: { summary: 'Show an image', tags: ['images'], params: idParam, response: { 200: imageResponse } } }, async (req) =>
    imageJson(await deps.access.getImage(ctxOf(req), idOf(req))),
  );

  app.patch(
    '/api/v1/images/:id',
    { schema: { summary: 'Update image metadata', tags: ['images'], params: idParam, body: { type: 'object', additionalProperties: true }, response: { 200: imageResponse } } },
    async (req) => {
      const { rest, ownership } = takeOwnership(req.body);
      return imageJson(await deps.access.updateImage(ctxOf(req), idOf(req), parseUpdateInput(rest), ownership));
    },
  );

  app.delete('/api/v1/images/:id', { schema: { summary: 'Delete an image (409 while locked or in use)', tags: ['images'], params: idParam } }, async (req, reply) => {
    await deps.access.deleteImage(ctxOf(req), idOf(req));
    return reply.code(204).send();
  });

  for (const action of ['disable', 'enable'] as const) {
    app.post(`/api/v1/images/:id/${action}`, { schema: { summary: `${action[0]!.toUpperCase()}${action.slice(1)} an image`, tags: ['images'], params: idParam, response: { 200: imageResponse } } }, async (req) =>
      imageJson(await deps.access.setEnabled(ctxOf(req), idOf(req), action === 'enable')),
    );
  }

  app.put(
    '/api/v1/images/:id/file',
    {
      schema: {
        summary: 'Upload the image bytes (streamed; gz/xz/zstd/bz2 are unwrapped; works with curl -T)',
        tags: ['images'],
        params: idParam,
        headers: { type: 'object', properties: { 'x-image-size': { type: 'string', description: 'bytes the upload will send, when Content-Length is absent' } } },
        consumes: ['application/octet-stream'],
        response: { 200: imageResponse },
      },
      config: { rawBody: true },
      // refused before any byte is read: a JSON, text or form body is not an image (no parser runs)
      preParsing: async (req) => {
        const type = header(req, 'content-type');
        if (type !== undefined && NOT_IMAGE_BYTES.test(type)) {
          throw new DomainError(
            'UNSUPPORTED_MEDIA_TYPE',
            `the image bytes were sent as ${type.slice(0, 100)}; send them as Content-Type: application/octet-stream (curl -T sets none, which is fine too)`,
            { accepted: ['application/octet-stream'] },
          );
        }
      },
    },
    async (req, reply) => {
      const announced = announcedSize(req);
      const ac = new AbortController();
      const onClose = () => {
        if (!req.raw.complete) ac.abort(new Error(`the client disconnected after sending part of the body`));
      };
      req.raw.on('close', onClose);
      try {
        const body = withBodyIdleTimeout(req.raw, bodyIdleTimeoutMs);
        const image = await deps.access.upload(ctxOf(req), idOf(req), body, { announcedSize: announced, signal: ac.signal });
        return imageJson(image);
      } catch (e) {
        // a stalled client may never read the answer: close the socket once the 408 is written
        if (e instanceof DomainError && e.code === 'REQUEST_TIMEOUT') reply.raw.once('finish', () => req.raw.socket.destroy());
        throw e;
      } finally {
        req.raw.off('close', onClose);
      }
    },
  );

  app.post(
    '/api/v1/images/:id/import',
    {
      schema: {
        summary: 'Import the image bytes from an http(s) URL, as a background job with progress (same ingest path as uploads)',
        tags: ['images'],
        params: idParam,
        body: { type: 'object', required: ['url'], properties: { url: { type: 'string', maxLength: 8192 } } },
        response: { 202: imageResponse },
      },
    },
    async (req, reply) => {
      const image = await deps.access.startImport(ctxOf(req), idOf(req), (req.body as { url: string }).url);
      return reply.code(202).send(imageJson(image));
    },
  );
  app.delete('/api/v1/images/:id/import', { schema: { summary: 'Cancel a running import', tags: ['images'], params: idParam, response: { 200: imageResponse } } }, async (req) => {
    return imageJson(await deps.access.cancelImport(ctxOf(req), idOf(req)));
  });

  /**
   * `?format=FMT[&subformat=S][&options=k=v,...]`: the bytes in another format. A stored variant
   * (or the original, for the image's own format) is served like the plain download: Range, ETag
   * (its own digest), Repr-Digest. A conversion made now is sent as it is produced (chunked: no
   * length, no Range, no ETag) and stored meanwhile, so the next download is a plain read.
   */
  const variantRoute = async (req: FastifyRequest, reply: FastifyReply, head: boolean, q: { format: string; subformat?: string; options?: string }) => {
    const target = parseConvertTarget(q.format, { subformat: q.subformat, options: q.options });
    const etagOf = (digest: string) => `"${digest.slice('sha256:'.length)}"`;
    const r = await deps.access.openVariant(ctxOf(req), idOf(req), target, {
      head,
      rangeFor: (size, digest) => parseRange(header(req, 'range'), size, header(req, 'if-range'), etagOf(digest)),
    });
    void reply.header('content-type', 'application/octet-stream').header('x-image-format', r.format);
    if (r.kind === 'converting') {
      void reply.header('x-image-variant', 'converting').header('cache-control', 'no-store');
      return head ? reply.send() : reply.send(r.stream);
    }
    const etag = etagOf(r.digest);
    void reply.header('accept-ranges', 'bytes').header('etag', etag).header('x-image-variant', r.source);
    if (header(req, 'if-none-match') === etag) {
      r.stream?.destroy();
      return reply.code(304).send();
    }
    const digests = [`sha-256=:${Buffer.from(r.digest.slice(7), 'hex').toString('base64')}:`];
    if (r.sha512) digests.push(`sha-512=:${Buffer.from(r.sha512, 'hex').toString('base64')}:`);
    void reply.header('repr-digest', digests.join(', ')).header('x-image-digest', r.digest);
    if (r.md5) void reply.header('content-md5', r.md5);
    if (r.range) {
      void reply.code(206).header('content-range', `bytes ${r.range.start}-${r.range.end}/${r.sizeBytes}`).header('content-length', String(r.range.end - r.range.start + 1));
    } else {
      void reply.header('content-length', String(r.sizeBytes));
    }
    return head ? reply.send() : reply.send(r.stream);
  };

  const fileRoute = async (req: FastifyRequest, reply: FastifyReply, head: boolean) => {
    const q = req.query as { format?: string; subformat?: string; options?: string };
    if (typeof q.format === 'string') return variantRoute(req, reply, head, { format: q.format, subformat: q.subformat, options: q.options });
    const id = idOf(req);
    const ctx = ctxOf(req);
    const img = await deps.access.getImage(ctx, id);
    const etag = img.digest ? `"${img.digest.slice('sha256:'.length)}"` : undefined;
    const range = parseRange(header(req, 'range'), img.storedSize ?? 0, header(req, 'if-range'), etag);
    if (etag && header(req, 'if-none-match') === etag) return reply.code(304).header('etag', etag).send();
    const { image, stream } = head
      ? { image: img, stream: undefined }
      : await deps.access.openFile(ctx, id, range ?? undefined);
    if (head && (!image.digest || image.state !== 'ready')) await deps.access.openFile(ctx, id).then((r) => r.stream.destroy());
    const size = image.storedSize ?? 0;
    void reply.header('content-type', 'application/octet-stream').header('accept-ranges', 'bytes');
    if (etag) void reply.header('etag', etag);
    if (image.digest) {
      const digests = [`sha-256=:${Buffer.from(image.digest.slice(7), 'hex').toString('base64')}:`];
      if (image.checksums.sha512) digests.push(`sha-512=:${Buffer.from(image.checksums.sha512, 'hex').toString('base64')}:`);
      void reply.header('repr-digest', digests.join(', ')).header('x-image-digest', image.digest);
    }
    if (image.checksums.md5) void reply.header('content-md5', image.checksums.md5);
    if (range) {
      void reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`).header('content-length', String(range.end - range.start + 1));
    } else {
      void reply.header('content-length', String(size));
    }
    if (head) return reply.send();
    return reply.send(stream);
  };
  app.get(
    '/api/v1/images/:id/file',
    {
      schema: {
        summary: 'Download the image bytes (Range, ETag, Repr-Digest), optionally converted to another format',
        tags: ['images'],
        params: idParam,
        querystring: {
          type: 'object',
          properties: {
            format: { type: 'string', maxLength: 16, description: 'raw, qcow2, vmdk, vhd, vhdx or vdi; the image\'s own format is the original' },
            subformat: { type: 'string', maxLength: 64, description: 'e.g. fixed (vhd), streamOptimized (vmdk)' },
            options: { type: 'string', maxLength: 600, description: 'writer options as qemu-img -o spells them: k=v,k=v (compress=on for -c)' },
          },
        },
        produces: ['application/octet-stream'],
      },
    },
    (req, reply) => fileRoute(req, reply, false),
  );
  app.head('/api/v1/images/:id/file', { schema: { params: idParam } }, (req, reply) => fileRoute(req, reply, true));

  app.get(
    '/api/v1/events',
    {
      schema: {
        summary: 'Server-sent events: image state and progress changes',
        tags: ['images'],
        querystring: { type: 'object', properties: { image: { type: 'string', description: 'only this image id' } } },
        produces: ['text/event-stream'],
      },
    },
    (req, reply) => {
      const only = (req.query as { image?: string }).image;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      res.write(': imago events\n\n');
      // The stream outlives the moment its credentials were checked: they are checked again every
      // eventsRecheckMs and before each event, so a revoked token or a deleted user stops receiving
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
        (checking ??= deps.access
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
        if (!(await deps.access.canSee(principal, c.image).catch(() => false)) || ended) return;
        // a client that stops reading would make us buffer every later event: cut it off instead
        if (res.writableLength > SSE_MAX_BUFFERED_BYTES) {
          endWith(new DomainError('REQUEST_TIMEOUT', `this event stream was not read (over ${SSE_MAX_BUFFERED_BYTES} bytes waiting); reconnect and read it`));
          res.destroy();
          return;
        }
        res.write(`id: ${c.seq}\nevent: ${c.type}\ndata: ${JSON.stringify({ type: c.type, at: c.at.toISOString(), image: imageJson(c.image) })}\n\n`);
      };
      // one event at a time, in order
      const unsubscribe = deps.events.subscribe((c) => void (delivering = delivering.then(() => send(c)).catch(() => undefined)));
      const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
      const recheckTimer = setInterval(() => void recheck(), eventsRecheckMs);
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

  registerAccessRoutes(app, deps.access);
  deps.extend?.(app);
  return app;
}

/** Bytes an event stream may have waiting for a client that does not read before it is cut off. */
const SSE_MAX_BUFFERED_BYTES = 1024 * 1024;

export function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return reply;
  }
  // an upload stopped in the middle (its body iterator was closed): the socket cannot carry another
  // request, so say so instead of letting a keep-alive client reuse it
  // (refused before reading: Node drains the rest and the connection stays usable)
  if (!req.raw.complete && req.raw.readableDidRead) void reply.header('connection', 'close');
  if (err instanceof DomainError) {
    const status = STATUS_OF[err.code];
    // RFC 9110 §15.5.17: a 416 says how large the representation is
    if (err.code === 'RANGE_NOT_SATISFIABLE' && typeof err.details.size === 'number') void reply.header('content-range', `bytes */${err.details.size}`);
    return reply.code(status).type('application/problem+json').send(problem(err.code, status, err.message, req.id, err.details));
  }
  const fe = err as { validation?: unknown; statusCode?: number; code?: string; message?: string };
  if (fe.validation || (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500)) {
    const status = fe.statusCode ?? 400;
    const code = FRAMEWORK_CODES[status] ?? 'INVALID_REQUEST';
    return reply.code(status).type('application/problem+json').send(problem(code, status, frameworkDetail(fe), req.id));
  }
  req.log.error({ err }, 'unhandled error');
  return reply
    .code(500)
    .type('application/problem+json')
    .send(problem('INTERNAL', 500, `an internal error occurred; report request id ${req.id} to the operator`, req.id));
}

/** Fastify's own 4xx statuses → our stable codes (its FST_ERR_* names are not part of our API). */
const FRAMEWORK_CODES: Record<number, string> = { 408: 'REQUEST_TIMEOUT', 413: 'SIZE_LIMIT', 415: 'UNSUPPORTED_MEDIA_TYPE', 431: 'HEADERS_TOO_LARGE' };

function frameworkDetail(fe: { code?: string; message?: string }): string {
  switch (fe.code) {
    case 'FST_ERR_BAD_URL':
      return 'the URL path is not valid: a "%" must start an escape of two hex digits (%2F, %25); encode the path again';
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return `the body is not valid JSON (${fe.message ?? 'parse error'}); send a JSON object with Content-Type: application/json`;
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'the JSON body is larger than 1 MiB; image bytes go to PUT /api/v1/images/{id}/file as application/octet-stream';
    default:
      return `${fe.message ?? 'invalid request'}; see /api/v1/openapi.json`;
  }
}

/** Content-Types that cannot be image bytes (a client that sent JSON, text or a form by mistake). */
const NOT_IMAGE_BYTES = /^\s*(?:application\/(?:json|[\w.+-]*\+json|x-www-form-urlencoded)|text\/|multipart\/)/i;

function idOf(req: FastifyRequest): string {
  return (req.params as { id: string }).id;
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function announcedSize(req: FastifyRequest): number | undefined {
  for (const h of ['content-length', 'x-image-size']) {
    const v = header(req, h);
    if (v === undefined) continue;
    if (!/^\d{1,16}$/.test(v)) throw new DomainError('INVALID_REQUEST', `header ${h} must be a byte count, got "${v.slice(0, 40)}"`);
    return Number(v);
  }
  return undefined;
}

/** RFC 9110 single byte range; multiple ranges or a stale If-Range → the whole body (null). */
export function parseRange(value: string | undefined, size: number, ifRange: string | undefined, etag: string | undefined): ByteRange | null {
  if (!value) return null;
  if (ifRange !== undefined && ifRange !== etag) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!m || (m[1] === '' && m[2] === '')) {
    if (/^bytes=[\d\s,-]+$/.test(value)) return null; // several ranges: send it all
    throw new DomainError('INVALID_REQUEST', `Range header "${value.slice(0, 60)}" is not "bytes=START-END"`);
  }
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) throw new DomainError('RANGE_NOT_SATISFIABLE', `range "${value}" asks for no bytes`, { size });
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) {
    throw new DomainError('RANGE_NOT_SATISFIABLE', `range "${value}" is outside the image's ${size} bytes`, { size });
  }
  return { start, end };
}

const SORT_KEYS: readonly ImageSortKey[] = ['name', 'createdAt', 'updatedAt', 'storedSize', 'virtualSize'];

export function parseListQuery(q: Record<string, unknown>): ImageQuery {
  const list = (k: string): string[] | undefined => {
    const v = q[k];
    if (v === undefined) return undefined;
    const items = (Array.isArray(v) ? v : [v]).flatMap((x) => String(x).split(',')).map((x) => x.trim()).filter(Boolean);
    return items.length ? items : undefined;
  };
  const date = (k: string): Date | undefined => {
    const v = q[k];
    if (v === undefined) return undefined;
    const d = new Date(String(v));
    if (Number.isNaN(d.getTime())) throw new DomainError('INVALID_REQUEST', `${k} must be an ISO 8601 date-time, got "${String(v)}"`);
    return d;
  };
  const query: ImageQuery = { limit: Number(q.limit ?? 100) };
  if (typeof q.name === 'string') query.name = q.name;
  const state = list('state');
  if (state) query.state = state as ImageQuery['state'];
  const type = list('type');
  if (type) query.type = type.map((t) => t.toUpperCase()) as ImageQuery['type'];
  const df = list('diskFormat');
  if (df) query.diskFormat = df as ImageQuery['diskFormat'];
  const tags = list('tag');
  if (tags) query.tags = tags;
  const props = q.property === undefined ? undefined : (Array.isArray(q.property) ? q.property : [q.property]).map(String);
  if (props) {
    query.properties = {};
    for (const p of props) {
      const eq = p.indexOf('=');
      if (eq <= 0) throw new DomainError('INVALID_REQUEST', `property filter "${p}" must be key=value`);
      query.properties[p.slice(0, eq)] = p.slice(eq + 1);
    }
  }
  for (const k of ['createdAfter', 'createdBefore', 'updatedAfter', 'updatedBefore'] as const) {
    const d = date(k);
    if (d) query[k] = d;
  }
  if (typeof q.sort === 'string') {
    const [key, dir = 'asc'] = q.sort.split(':');
    if (!SORT_KEYS.includes(key as ImageSortKey) || (dir !== 'asc' && dir !== 'desc')) {
      throw new DomainError('INVALID_REQUEST', `sort "${q.sort}" must be one of ${SORT_KEYS.join(', ')} with an optional :asc or :desc`);
    }
    query.sort = { key: key as ImageSortKey, dir };
  }
  if (typeof q.cursor === 'string') query.cursor = q.cursor;
  if (typeof q.project === 'string') query.project = q.project;
  const vis = list('visibility');
  if (vis) {
    for (const v of vis) if (!(VISIBILITIES as readonly string[]).includes(v)) throw new DomainError('INVALID_REQUEST', `visibility "${v}" is not one of ${VISIBILITIES.join(', ')}`);
    query.visibility = vis as ImageQuery['visibility'];
  }
  if (typeof q.memberStatus === 'string') query.memberStatus = q.memberStatus as ImageQuery['memberStatus'];
  const states = ['pending', 'importing', 'ready', 'disabled', 'error', 'deleting', 'locked'];
  for (const s of query.state ?? []) if (!states.includes(s)) throw new DomainError('INVALID_REQUEST', `state "${s}" is not one of ${states.join(', ')}`);
  return query;
}
