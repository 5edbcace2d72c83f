/**
 * The native REST API (`/api/v1` + its OpenAPI document), as one encapsulated Fastify plugin: its
 * own body rules, authentication, error table and 404 apply to its routes only. Split by resource:
 * images, files (upload, download, variants), events (SSE), access. Another door copies this shape
 * with its own prefix, credentials and error table.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { AuditLog } from '../../domain/access/audit-log.js';
import type { Authenticator } from '../../domain/access/authenticator.js';
import type { Authorizer } from '../../domain/access/authorizer.js';
import type { IdentityAdmin } from '../../domain/access/identity-admin.js';
import type { ImageAccess } from '../../domain/access/image-access.js';
import type { ImageSharing } from '../../domain/access/image-sharing.js';
import type { ProjectAdmin } from '../../domain/access/project-admin.js';
import type { ImageEvents } from '../../domain/images/events.js';
import { acceptJsonBodies } from '../http/json-bodies.js';
import { authenticateRequests } from '../http/principal.js';
import { accessRoutes } from './access-routes.js';
import { sendNoRoute, sendProblem } from './error-table.js';
import { eventRoutes } from './event-routes.js';
import { fileRoutes } from './file-routes.js';
import { imageRoutes } from './image-routes.js';
import type { ResumableUploads } from '../../domain/images/resumable-uploads.js';
import { tusRoutes, tusSelfAuthenticated } from './tus-routes.js';
import { collectOpenApi } from './openapi.js';
import { CONSOLE_CONFIG_PATH, consoleRoutes, type ConsoleSettings } from './console-routes.js';
import type { GcPlan } from '../../domain/images/gc.js';

/** Where the door is mounted (its plugin prefix). */
export const REST_PREFIX = '/api/v1';

/** The domain services the REST door calls (src/domain/access/: every call is on behalf of a principal). */
export interface RestServices {
  /** credentials → principal */
  authenticator: Authenticator;
  /** the event stream's per-image visibility filter */
  authorizer: Authorizer;
  /** image operations on behalf of the request's principal */
  imageAccess: ImageAccess;
  sharing: ImageSharing;
  projects: ProjectAdmin;
  identity: IdentityAdmin;
  audit: AuditLog;
  /** resumable (tus) uploads and upload URLs; absent: not offered */
  resumable?: ResumableUploads;
  /** the web console's sign-in settings (GET /console) */
  console: ConsoleSettings;
  /** GC's plan as of now, nothing deleted (GET /gc, server admins) */
  gcPlan: () => Promise<GcPlan>;
}

export interface RestDoorOptions extends RestServices {
  events: ImageEvents;
  /** a request body idle this long is cut off */
  bodyIdleTimeoutMs: number;
  /** an open event stream re-checks its credentials this often */
  eventsRecheckMs: number;
  /** the largest image (tus Upload-Length over it is refused at creation) */
  maxImageBytes?: number;
  /** an upload URL's default lifetime */
  uploadUrlTtlMs?: number;
}

export const restDoor: FastifyPluginAsyncTypebox<RestDoorOptions> = async (app, opts) => {
  acceptJsonBodies(app, { idleTimeoutMs: opts.bodyIdleTimeoutMs });
  // liveness and the API description are open
  authenticateRequests(app, {
    authenticate: (authorization) => opts.authenticator.authenticate(authorization),
    openPaths: [`${REST_PREFIX}/healthz`, `${REST_PREFIX}/openapi.json`, `${REST_PREFIX}${CONSOLE_CONFIG_PATH}`],
    // the tus endpoint and upload URLs also take an upload URL's token: they read credentials themselves
    selfAuthenticated: opts.resumable ? tusSelfAuthenticated : undefined,
  });
  app.setErrorHandler((err: unknown, req, reply) => sendProblem(req, reply, err));
  app.setNotFoundHandler(sendNoRoute);
  const openapi = collectOpenApi(app);

  app.get('/openapi.json', { schema: { hide: true } }, async () => openapi());
  app.get('/healthz', { schema: { summary: 'liveness', tags: ['meta'] } }, async () => ({ status: 'ok' }));
  const { imageAccess } = opts;
  await app.register(imageRoutes, { imageAccess });
  await app.register(fileRoutes, { imageAccess, bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs });
  await app.register(eventRoutes, { authenticator: opts.authenticator, authorizer: opts.authorizer, events: opts.events, recheckMs: opts.eventsRecheckMs });
  if (opts.resumable) {
    await app.register(tusRoutes, {
      imageAccess,
      authenticator: opts.authenticator,
      resumable: opts.resumable,
      maxImageBytes: opts.maxImageBytes ?? Number.MAX_SAFE_INTEGER,
      bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs,
      uploadUrlTtlMs: opts.uploadUrlTtlMs ?? 3600_000,
    });
  }
  await app.register(consoleRoutes, { authorizer: opts.authorizer, settings: opts.console, gcPlan: opts.gcPlan });
  await app.register(accessRoutes, { projects: opts.projects, identity: opts.identity, sharing: opts.sharing, imageAccess, audit: opts.audit });
};
