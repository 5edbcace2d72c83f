/**
 * The HTTP edge: one Fastify server (api/http) with its doors registered as encapsulated plugins:
 * the native REST API under /api/v1, the OCI Distribution API under /v2/ and the OpenStack Image
 * API v2 under /image; the web console (api/web) at / with its page paths.
 */
import type { FastifyInstance } from 'fastify';
import type { ImageEvents } from '../domain/images/events.js';
import type { OsHashAlgo } from '../domain/images/image.js';
import { GLANCE_PREFIX, glanceDoor } from './glance/glance-door.js';
import { createHttpServer } from './http/http-server.js';
import { sendNoRoute, sendProblem } from './rest/error-table.js';
import { OCI_PREFIX, ociDoor, type OciServices } from './oci/oci-door.js';
import { REST_PREFIX, restDoor, type RestServices } from './rest/rest-door.js';
import { webDoor } from './web/web-door.js';

export interface ApiDeps extends RestServices, OciServices {
  events: ImageEvents;
  logger?: boolean;
  /** a request body idle this long is cut off (default 60 s) */
  bodyIdleTimeoutMs?: number;
  /** an open event stream re-checks its credentials this often (default 3 s) */
  eventsRecheckMs?: number;
  /** the catalog's durability barrier (Database.durable) */
  durable?: () => Promise<void>;
  /** the Glance door's os_hash_algo (default sha512) */
  osHashAlgo?: OsHashAlgo;
  /** the largest image */
  maxImageBytes?: number;
  /** an upload URL's default lifetime */
  uploadUrlTtlMs?: number;
  /** the built web console's folder (web/dist) */
  consoleDir: string;
}

export function buildApi(deps: ApiDeps): FastifyInstance {
  // what no door claims is answered in the native API's shape (problem+json)
  const app = createHttpServer({ logger: deps.logger, errorReply: sendProblem, notFound: sendNoRoute, durable: deps.durable });
  void app.register(restDoor, {
    prefix: REST_PREFIX,
    authenticator: deps.authenticator,
    authorizer: deps.authorizer,
    imageAccess: deps.imageAccess,
    sharing: deps.sharing,
    projects: deps.projects,
    identity: deps.identity,
    audit: deps.audit,
    resumable: deps.resumable,
    maxImageBytes: deps.maxImageBytes,
    uploadUrlTtlMs: deps.uploadUrlTtlMs,
    console: deps.console,
    gcPlan: deps.gcPlan,
    events: deps.events,
    bodyIdleTimeoutMs: deps.bodyIdleTimeoutMs ?? 60_000,
    eventsRecheckMs: deps.eventsRecheckMs ?? 3_000,
  });
  void app.register(ociDoor, {
    prefix: OCI_PREFIX,
    authenticator: deps.authenticator,
    registry: deps.registry,
    uploads: deps.uploads,
    bodyIdleTimeoutMs: deps.bodyIdleTimeoutMs ?? 60_000,
  });
  void app.register(glanceDoor, {
    prefix: GLANCE_PREFIX,
    authenticator: deps.authenticator,
    imageAccess: deps.imageAccess,
    sharing: deps.sharing,
    hashAlgo: deps.osHashAlgo ?? 'sha512',
    projects: deps.projects,
    bodyIdleTimeoutMs: deps.bodyIdleTimeoutMs ?? 60_000,
  });
  // the console's static files and page paths; every other path stays the doors' (or a 404 problem)
  void app.register(webDoor, { dir: deps.consoleDir, connectOrigins: deps.console.oidc ? [new URL(deps.console.oidc.issuer).origin] : [] });
  return app;
}
