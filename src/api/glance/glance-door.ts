/**
 * The OpenStack Image API v2 (Glance-compatible) door under `/image`, as one encapsulated Fastify
 * plugin: its own body rules (JSON, Glance's JSON-patch media types, raw image bytes), credentials
 * (`X-Auth-Token` carries an Imago token), error table (Glance's bodies) and 404. Handlers call the
 * domain's `ImageAccess` only; the views and vocabulary mapping are in image-view.ts.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { Authenticator } from '../../domain/access/authenticator.js';
import type { ImageAccess } from '../../domain/access/image-access.js';
import type { ImageSharing } from '../../domain/access/image-sharing.js';
import type { OsHashAlgo } from '../../domain/images/image.js';
import type { ProjectAdmin } from '../../domain/access/project-admin.js';
import { acceptJsonBodies } from '../http/json-bodies.js';
import { authenticateRequests } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { sendGlanceError, sendGlanceNoRoute } from './error-table.js';
import { glanceFileRoutes } from './file-routes.js';
import { glanceImageRoutes } from './image-routes.js';
import { glanceMemberRoutes } from './member-routes.js';
import { glanceImportRoutes } from './import-routes.js';
import { glanceInfoRoutes } from './info-routes.js';
import { glanceTaskRoutes } from './task-routes.js';
import { PATCH_MEDIA_TYPES } from './image-patch.js';
import { IMAGE_SCHEMA, IMAGES_SCHEMA, MEMBER_SCHEMA, MEMBERS_SCHEMA } from './schemas.js';

/** Where the door is mounted (its plugin prefix), as devstack mounts Glance. */
export const GLANCE_PREFIX = '/image';

export interface GlanceDoorOptions {
  /** credentials → principal */
  authenticator: Authenticator;
  imageAccess: ImageAccess;
  /** image members */
  sharing: ImageSharing;
  /** what os_hash_algo / os_hash_value show */
  hashAlgo: OsHashAlgo;
  /** project quotas, for `/v2/info/usage` */
  projects: ProjectAdmin;
  /** a request body idle this long is cut off */
  bodyIdleTimeoutMs: number;
}

/** The versions Glance 25.1 lists (v2.14 is not among them there either). */
const VERSIONS = ['2.15', '2.13', '2.12', '2.11', '2.10', '2.9', '2.8', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];

function versionsDocument(req: FastifyRequest): { versions: { id: string; status: string; links: { rel: string; href: string }[] }[] } {
  const proto = header(req, 'x-forwarded-proto') ?? req.protocol;
  const href = `${proto}://${header(req, 'host') ?? req.hostname}${GLANCE_PREFIX}/v2/`;
  return {
    versions: VERSIONS.map((v, i) => ({ id: `v${v}`, status: i === 0 ? 'CURRENT' : 'SUPPORTED', links: [{ rel: 'self', href }] })),
  };
}

export const glanceDoor: FastifyPluginAsyncTypebox<GlanceDoorOptions> = async (app, opts) => {
  acceptJsonBodies(app, { idleTimeoutMs: opts.bodyIdleTimeoutMs });
  // Glance's image updates are JSON patches in their own media types: parsed as JSON, checked by the route
  app.addContentTypeParser([...PATCH_MEDIA_TYPES], { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));
  authenticateRequests(app, {
    // X-Auth-Token is Glance's (Keystone's) header; an Authorization header works as on the other doors
    authenticate: (authorization) => opts.authenticator.authenticate(authorization),
    credentials: (req) => {
      const token = header(req, 'x-auth-token');
      return token !== undefined ? `Bearer ${token}` : header(req, 'authorization');
    },
    openPaths: [GLANCE_PREFIX, `${GLANCE_PREFIX}/`, `${GLANCE_PREFIX}/versions`],
  });
  app.setErrorHandler((err: unknown, req, reply) => sendGlanceError(req, reply, err));
  app.setNotFoundHandler(sendGlanceNoRoute);

  // Glance answers the root with 300 Multiple Choices and /versions with 200, the same document
  app.get('/', async (req, reply) => reply.code(300).send(versionsDocument(req)));
  app.get('/versions', async (req) => versionsDocument(req));
  app.get('/v2/schemas/image', async () => IMAGE_SCHEMA);
  app.get('/v2/schemas/images', async () => IMAGES_SCHEMA);
  app.get('/v2/schemas/member', async () => MEMBER_SCHEMA);
  app.get('/v2/schemas/members', async () => MEMBERS_SCHEMA);

  await app.register(glanceImageRoutes, { imageAccess: opts.imageAccess, sharing: opts.sharing, view: { hashAlgo: opts.hashAlgo } });
  await app.register(glanceMemberRoutes, { imageAccess: opts.imageAccess, sharing: opts.sharing });
  await app.register(glanceFileRoutes, { imageAccess: opts.imageAccess, bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs });
  await app.register(glanceImportRoutes, { imageAccess: opts.imageAccess, bodyIdleTimeoutMs: opts.bodyIdleTimeoutMs });
  await app.register(glanceInfoRoutes, { projects: opts.projects });
  await app.register(glanceTaskRoutes, { imageAccess: opts.imageAccess });
};
