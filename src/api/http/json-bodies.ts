/**
 * How a door takes request bodies: JSON only, taken as sent, and cut off when it stops arriving.
 * Raw bodies (image bytes; a route with `config: { rawBody: true }`) are streamed by their
 * handlers, never buffered. Call it inside the door's plugin: it shapes that door's context only.
 */
import type { FastifyInstance } from 'fastify';
import { DomainError } from '../../domain/errors.js';
import { bodyWithIdleTimeout } from './body-idle-timeout.js';
import { header } from './request-header.js';
import { assertBodyTypes } from './strict-body.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the handler streams the raw body itself (image bytes); no parser reads it */
    rawBody?: boolean;
  }
}

export function acceptJsonBodies(app: FastifyInstance, opts: { idleTimeoutMs: number }): void {
  // Fastify's text/plain parser would hand a JSON route a string
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
    return hasBody && !req.routeOptions.config.rawBody ? bodyWithIdleTimeout(payload, opts.idleTimeoutMs) : payload;
  });
  // querystrings are coerced by Ajv (?limit=10); bodies are checked strictly first (strict-body.ts)
  app.addHook('preValidation', async (req) => {
    const schema = req.routeOptions.schema?.body as Parameters<typeof assertBodyTypes>[0] | undefined;
    if (schema && req.body !== undefined) assertBodyTypes(schema, req.body);
  });
}
