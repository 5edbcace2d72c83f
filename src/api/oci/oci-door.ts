/**
 * The OCI Distribution door (`/v2/`, distribution spec v1.1), as one encapsulated Fastify plugin
 * like the REST door: its own body rules (every body is streamed or read by its handler; no parser
 * runs), its own authentication (Bearer or Basic with an Imago token; a 401 carries the challenge
 * docker, oras and skopeo follow to `/v2/token`), its own error table (`{"errors":[…]}`) and 404.
 * Repository names hold slashes, so one catch-all route dispatches to the resource files' endpoints
 * (oci-route.ts): blobs, uploads, manifests, listings (tags, referrers, catalog), token.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator } from '../../domain/access/authenticator.js';
import type { BlobUploads } from '../../domain/registry/blob-uploads.js';
import type { OciRegistry } from '../../domain/registry/oci-registry.js';
import { authenticateRequests, ctxOf } from '../http/principal.js';
import { blobRoutes } from './blob-routes.js';
import { sendOciError, sendOciNoRoute, ociErrors } from './error-table.js';
import { listingRoutes } from './listing-routes.js';
import { manifestRoutes } from './manifest-routes.js';
import type { OciMethod, OciRoute } from './oci-route.js';
import { tokenRoutes } from './token-routes.js';
import { uploadRoutes } from './upload-routes.js';

/** Where the door is mounted (its plugin prefix). */
export const OCI_PREFIX = '/v2';

/** The domain services the OCI door calls. */
export interface OciServices {
  authenticator: Authenticator;
  registry: OciRegistry;
  uploads: BlobUploads;
}

export interface OciDoorOptions extends OciServices {
  /** a request body idle this long is cut off; a download the client stops taking too */
  bodyIdleTimeoutMs: number;
}

const METHODS: OciMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

export const ociDoor: FastifyPluginAsync<OciDoorOptions> = async (app, opts) => {
  // bodies are the handlers' (blob bytes streamed to the store, manifests read up to their limit)
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  authenticateRequests(app, {
    authenticate: (authorization) => opts.authenticator.authenticate(authorization),
    // the token endpoint checks the credentials it is given itself (and answers 401 with Basic)
    openPaths: [`${OCI_PREFIX}/token`],
  });
  app.setErrorHandler((err: unknown, req, reply) => sendOciError(req, reply, err));
  app.setNotFoundHandler(sendOciNoRoute);
  app.addHook('onSend', async (_req, reply) => {
    void reply.header('docker-distribution-api-version', 'registry/2.0');
  });

  const { registry, uploads, bodyIdleTimeoutMs } = opts;
  const routes: OciRoute[] = [
    ...tokenRoutes((authorization) => opts.authenticator.authenticate(authorization), { bodyIdleTimeoutMs }),
    ...listingRoutes(registry),
    ...uploadRoutes(uploads, { bodyIdleTimeoutMs }),
    ...blobRoutes(registry, { bodyIdleTimeoutMs }),
    ...manifestRoutes(registry, { bodyIdleTimeoutMs }),
  ];

  // GET /v2/: the API version check, and where clients learn whether (and how) to log in
  app.route({
    method: ['GET', 'HEAD'],
    url: '/',
    handler: async (req, reply) => {
      registry.base(ctxOf(req));
      return reply.type('application/json').send({});
    },
  });
  app.route({
    method: METHODS,
    url: '/*',
    handler: async (req: FastifyRequest, reply: FastifyReply) => {
      const path = req.url.split('?')[0]!.slice(OCI_PREFIX.length + 1);
      let allowed: OciMethod[] = [];
      for (const route of routes) {
        const m = route.pattern.exec(path);
        if (!m) continue;
        if (!route.methods.includes(req.method as OciMethod)) {
          allowed = allowed.concat(route.methods);
          continue;
        }
        return route.handler(req, reply, { ...m.groups });
      }
      if (allowed.length === 0) return sendOciNoRoute(req, reply);
      return reply
        .code(405)
        .header('allow', [...new Set(allowed)].join(', '))
        .type('application/json')
        .send(ociErrors('UNSUPPORTED', `${req.method} is not supported on ${req.url.split('?')[0]!.slice(0, 300)}; use ${[...new Set(allowed)].join(', ')}`));
    },
  });
};
