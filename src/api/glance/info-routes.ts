/**
 * Glance's discovery calls under `/image/v2/info`: the import methods (`glance image-create-via-import`
 * checks its method against them), the stores (one: Imago's content-addressed store, the default),
 * and the caller's quota usage from Imago's project quotas.
 *
 * | Glance usage | Imago project quota (docs/ACCESS.md) | unit |
 * |---|---|---|
 * | `image_size_total` | `storedBytes` | MiB (rounded down, as Glance) |
 * | `image_stage_total` | `stagingBytes` (bytes reserved by running uploads, stages and imports) | MiB |
 * | `image_count_total` | `images` | images |
 * | `image_count_uploading` | `imports` (URL imports running) | imports |
 *
 * An unlimited quota is `-1` (Keystone's word for it). The project is the caller's only one (a token
 * scoped to a project); without one the answer is `{"usage": {}}`, as Glance answers without limits.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { defaultProject } from '../../domain/access/policy.js';
import type { ProjectAdmin } from '../../domain/access/project-admin.js';
import { ctxOf } from '../http/principal.js';
import { IMPORT_METHODS, STORE_ID } from './import-view.js';

const MiB = 1024 * 1024;

export const glanceInfoRoutes: FastifyPluginAsyncTypebox<{ projects: ProjectAdmin }> = async (app, { projects }) => {
  app.get('/v2/info/import', async () => ({
    'import-methods': { description: 'Import methods available.', type: 'array', value: [...IMPORT_METHODS] },
  }));

  app.get('/v2/info/stores', async () => ({ stores: [{ id: STORE_ID, default: 'true' }] }));

  app.get('/v2/info/usage', async (req) => {
    const ctx = ctxOf(req);
    const project = defaultProject(ctx.principal);
    if (project === undefined) return { usage: {} };
    const { limits, usage } = await projects.quota(ctx, project);
    const mib = (n: number | undefined) => (n === undefined ? -1 : Math.floor(n / MiB));
    const count = (n: number | undefined) => n ?? -1;
    return {
      usage: {
        image_size_total: { limit: mib(limits.storedBytes), usage: Math.floor(usage.storedBytes / MiB) },
        image_stage_total: { limit: mib(limits.stagingBytes), usage: Math.floor(usage.stagingBytes / MiB) },
        image_count_total: { limit: count(limits.images), usage: usage.images },
        image_count_uploading: { limit: count(limits.imports), usage: usage.imports },
      },
    };
  });
};
