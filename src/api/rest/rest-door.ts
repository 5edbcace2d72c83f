/**
 * The native REST API (`/api/v1` + its OpenAPI document), as one encapsulated Fastify plugin: its
 * own body rules, authentication, error table and 404 apply to its routes only. Split by resource:
 * images, files (upload, download, variants), events (SSE), access. Another door copies this shape
 * with its own prefix, credentials and error table.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { AccessService } from '../../domain/access-service.js';
import type { ImageEvents } from '../../domain/events.js';
import { acceptJsonBodies } from '../http/json-bodies.js';
import { authenticateRequests } from '../http/principal.js';
import { accessRoutes } from './access-routes.js';
import { sendNoRoute, sendProblem } from './error-table.js';
import { eventRoutes } from './event-routes.js';
import { fileRoutes } from './file-routes.js';
import { imageRoutes } from './image-routes.js';
import { collectOpenApi } from './openapi.js';

/** Where the door is mounted (its plugin prefix). */
export const REST_PREFIX = '/api/v1';

export interface RestDoorOptions {
  access: AccessService;
  events: ImageEvents;
  /** a request body idle this long is cut off */
  bodyIdleTimeoutMs: number;
  /** an open event stream re-checks its credentials this often */
  eventsRecheckMs: number;
}

export const restDoor: FastifyPluginAsyncTypebox<RestDoorOptions> = async (app, opts) => {
  const { access } = opts;
  acceptJsonBodies(app, { idleTimeoutMs: opts.bodyIdleTimeoutMs });
  // liveness and the API description are open
  authenticateRequests(app, { authenticate: (authorization) => access.authenticate(authorization), openPaths: [`${REST_PREFIX}/healthz`, `${REST_PREFIX}/openapi.json`] });
  app.setErrorHandler((err: unknown, req, reply) => sendProblem(req, reply, err));
  app.setNotFoundHandler(sendNoRoute);
  const openapi = collectOpenApi(app);

  app.get('/openapi.json', { schema: { hide: true } }, async () => openapi());
  app.get('/healthz', { schema: { summary: 'liveness', tags: ['meta'] } }, async () => ({ status: 'ok' }));
  await app.register(imageRoutes, { access });
  await app.register(fileRoutes, { access, bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs });
  await app.register(eventRoutes, { access, events: opts.events, recheckMs: opts.eventsRecheckMs });
  await app.register(accessRoutes, { access });
};
