/**
 * Glance's tasks API over the import jobs: `GET /v2/tasks` and `/v2/tasks/{id}` (Glance's
 * `tasks_api_access` is `role:admin`: server administrators here), `GET /v2/images/{id}/tasks`
 * (API 2.12: anyone who sees the image), and the task schemas glanceclient builds its models from.
 * Listing follows Glance's `RequestDeserializer.index` (limit, marker, sort_key, sort_dir, status
 * and type filters) and its `next` link (given when the page is full).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import type { JobListQuery } from '../../domain/jobs/job-queue.js';
import { ctxOf } from '../http/principal.js';
import { GlanceError } from './error-table.js';
import { JOB_STATE_OF, TASK_SCHEMA, TASK_STATUSES, TASKS_SCHEMA, glanceImageTask, glanceTask, glanceTaskStub, type TaskStatus } from './task-view.js';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const UUID = /^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/;
/** Glance's limit_param_default and api_limit_max */
const DEFAULT_LIMIT = 25;
const MAX_LIMIT = 1000;
/** Glance's statuses sort by name: failure, pending, processing, success */
const BY_STATUS = [...TASK_STATUSES].sort().map((t) => JOB_STATE_OF[t]);
/** Glance's sort keys (glanceclient's task-list offers id, type and status; status is its default) */
const SORTS: Record<string, (dir: 'asc' | 'desc') => JobListQuery['sort']> = {
  created_at: (dir) => ({ key: 'createdAt', dir }),
  updated_at: (dir) => ({ key: 'updatedAt', dir }),
  id: (dir) => ({ key: 'id', dir }),
  // every task here is an api_image_import: their order is their age
  type: (dir) => ({ key: 'createdAt', dir }),
  status: (dir) => ({ key: 'state', order: BY_STATUS, dir }),
};

export const glanceTaskRoutes: FastifyPluginAsyncTypebox<{ imageAccess: ImageAccess }> = async (app, { imageAccess }) => {
  app.get('/v2/schemas/task', async () => TASK_SCHEMA);
  app.get('/v2/schemas/tasks', async () => TASKS_SCHEMA);

  app.get('/v2/tasks', async (req) => {
    const q = req.query as Record<string, unknown>;
    const one = (k: string): string | undefined => {
      const v = q[k];
      if (v === undefined) return undefined;
      if (typeof v !== 'string') throw new GlanceError(400, `${k} may be given once`);
      return v;
    };
    const query: Omit<JobListQuery, 'kind'> = { sort: { key: 'createdAt', dir: 'desc' }, limit: DEFAULT_LIMIT };
    const dir = one('sort_dir') ?? 'desc';
    if (dir !== 'asc' && dir !== 'desc') throw new GlanceError(400, `Invalid sort direction: ${dir.slice(0, 100)}`);
    const key = one('sort_key') ?? 'created_at';
    if (!Object.hasOwn(SORTS, key)) throw new GlanceError(400, `Unsupported sort_key ${key.slice(0, 100)}; sort tasks by ${Object.keys(SORTS).join(', ')}`);
    query.sort = SORTS[key]!(dir);
    const limit = one('limit');
    if (limit !== undefined) {
      if (!/^-?\d+$/.test(limit)) throw new GlanceError(400, 'limit param must be an integer');
      if (Number(limit) < 0) throw new GlanceError(400, 'limit param must be positive');
      query.limit = Math.min(MAX_LIMIT, Number(limit));
    }
    const marker = one('marker');
    if (marker !== undefined) {
      if (!UUID.test(marker)) throw new GlanceError(400, 'Invalid marker format');
      query.after = marker;
    }
    const status = one('status');
    if (status) {
      if (!(TASK_STATUSES as readonly string[]).includes(status)) throw new GlanceError(400, `Invalid status value: ${status.slice(0, 100)}`);
      query.states = [JOB_STATE_OF[status as TaskStatus]];
    }
    const type = one('type');
    // Glance's filter knows only the old task type `import`; every import here is `api_image_import`
    if (type && type !== 'import') throw new GlanceError(400, `Invalid type value: ${type.slice(0, 100)}`);
    const jobs = type === 'import' || query.limit === 0 ? [] : await imageAccess.listImportJobs(ctxOf(req), query);
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (k !== 'marker' && typeof v === 'string') params.append(k, v);
    const body: Record<string, unknown> = {
      tasks: jobs.map(glanceTaskStub),
      first: params.size > 0 ? `/v2/tasks?${params}` : '/v2/tasks',
      schema: '/v2/schemas/tasks',
    };
    if (jobs.length > 0 && jobs.length === query.limit) {
      params.set('marker', jobs[jobs.length - 1]!.id);
      body.next = `/v2/tasks?${params}`;
    }
    return body;
  });

  app.get('/v2/tasks/:id', { schema: { params: IdParams } }, async (req) => glanceTask(await imageAccess.importJob(ctxOf(req), req.params.id)));

  app.delete('/v2/tasks/:id', { schema: { params: IdParams }, config: { rawBody: true } }, async () => {
    throw new GlanceError(405, 'This operation is currently not permitted on Glance Tasks: they are kept as the record of the imports.', { allow: 'GET' });
  });

  app.get('/v2/images/:id/tasks', { schema: { params: IdParams } }, async (req) => ({
    tasks: (await imageAccess.importJobsOf(ctxOf(req), req.params.id)).map(glanceImageTask),
  }));
};
