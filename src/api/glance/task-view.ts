/**
 * Glance's tasks, as the import jobs (src/domain/jobs/import-job.ts) show through this door: the
 * schemas exactly as Glance 25.1 serves them (fetched from a live glance-api), and a job → task
 * mapping. A job is queued/running/done/failed; a task pending/processing/success/failure.
 *
 * | Glance task | Imago import job |
 * |---|---|
 * | `id` | the job id |
 * | `type` | `api_image_import` (every import is one) |
 * | `status` | queued → pending, running → processing, done → success, failed → failure |
 * | `input` | `image_id`, `import_req.method` (`web-download` with its `uri` — without credentials or query —, or `glance-direct`), `backend: ["default"]` |
 * | `result` | `{"image_id"}` on success, else null |
 * | `message` | the job's error when it failed, else `""` |
 * | `owner`, `user_id` | the image's project when the import started, the user who started it |
 * | `expires_at` | null: import jobs are kept (Glance removes its tasks 48 h after they end) |
 */
import type { Job } from '../../domain/jobs/job-queue.js';
import { parseImportPayload } from '../../domain/jobs/import-job.js';
import { glanceTime } from './image-view.js';
import { STORE_ID } from './import-view.js';

export const TASK_SCHEMA = {
  name: 'task',
  properties: {
    id: {
      description: 'An identifier for the task',
      pattern: '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$',
      type: 'string',
    },
    type: { description: 'The type of task represented by this content', enum: ['import', 'api_image_import'], type: 'string' },
    status: { description: 'The current status of this task', enum: ['pending', 'processing', 'success', 'failure'], type: 'string' },
    input: { description: 'The parameters required by task, JSON blob', type: ['null', 'object'] },
    result: { description: 'The result of current task, JSON blob', type: ['null', 'object'] },
    owner: { description: 'An identifier for the owner of this task', type: 'string' },
    message: { description: 'Human-readable informative message only included when appropriate (usually on failure)', type: 'string' },
    image_id: { description: 'Image associated with the task', type: 'string' },
    request_id: { description: 'Human-readable informative request-id', type: 'string' },
    user_id: { description: 'User associated with the task', type: 'string' },
    expires_at: { description: 'Datetime when this resource would be subject to removal', type: ['null', 'string'] },
    created_at: { description: 'Datetime when this resource was created', type: 'string' },
    updated_at: { description: 'Datetime when this resource was updated', type: 'string' },
    self: { readOnly: true, type: 'string' },
    schema: { readOnly: true, type: 'string' },
  },
};

/** The list's schema, built as Glance builds it: each item is the task without its input, result and message. */
export const TASKS_SCHEMA = {
  name: 'tasks',
  properties: {
    tasks: {
      type: 'array',
      items: {
        name: 'task',
        properties: Object.fromEntries(Object.entries(TASK_SCHEMA.properties).filter(([k]) => k !== 'input' && k !== 'result' && k !== 'message')),
      },
    },
    schema: { type: 'string' },
  },
  links: [{ rel: 'describedby', href: '{schema}' }],
};

const STATUS = { queued: 'pending', running: 'processing', done: 'success', failed: 'failure' } as const;

export type TaskStatus = (typeof STATUS)[keyof typeof STATUS];
export const TASK_STATUSES: readonly TaskStatus[] = Object.values(STATUS);
export const JOB_STATE_OF: Record<TaskStatus, Job['state']> = { pending: 'queued', processing: 'running', success: 'done', failure: 'failed' };

/** A task's fields, before they are shaped for one reply or the other. */
function taskFields(job: Job) {
  const p = parseImportPayload(job.payload);
  const method = p.source === 'url' ? { name: 'web-download', uri: shownUrl(p.url) } : { name: 'glance-direct' };
  return {
    id: job.id,
    type: 'api_image_import',
    status: STATUS[job.state],
    owner: p.project ?? '',
    input: { image_id: job.imageId ?? null, import_req: { method }, backend: [STORE_ID] },
    result: job.state === 'done' ? { image_id: job.imageId ?? null } : null,
    message: job.state === 'failed' ? (job.error ?? '') : '',
    image_id: job.imageId,
    user_id: p.user,
  };
}

/** `GET /v2/tasks/{id}`: the whole task. */
export function glanceTask(job: Job): Record<string, unknown> {
  const f = taskFields(job);
  const out: Record<string, unknown> = {
    id: f.id,
    input: f.input,
    type: f.type,
    status: f.status,
    owner: f.owner,
    message: f.message,
    result: f.result,
    created_at: glanceTime(job.createdAt),
    updated_at: glanceTime(job.updatedAt),
    self: `/v2/tasks/${job.id}`,
    schema: '/v2/schemas/task',
  };
  if (f.image_id !== undefined) out.image_id = f.image_id;
  if (f.user_id !== undefined) out.user_id = f.user_id;
  return out;
}

/** `GET /v2/tasks`: a task without its input, result and message. */
export function glanceTaskStub(job: Job): Record<string, unknown> {
  const f = taskFields(job);
  return {
    id: f.id,
    type: f.type,
    status: f.status,
    owner: f.owner,
    created_at: glanceTime(job.createdAt),
    updated_at: glanceTime(job.updatedAt),
    self: `/v2/tasks/${job.id}`,
    schema: '/v2/schemas/task',
  };
}

/** `GET /v2/images/{id}/tasks`: Glance answers its database rows there (times with microseconds, no zone). */
export function glanceImageTask(job: Job): Record<string, unknown> {
  const f = taskFields(job);
  return {
    id: f.id,
    type: f.type,
    status: f.status,
    owner: f.owner,
    expires_at: null,
    created_at: rowTime(job.createdAt),
    updated_at: rowTime(job.updatedAt),
    deleted_at: null,
    deleted: false,
    image_id: f.image_id ?? null,
    request_id: null,
    user_id: f.user_id ?? null,
    input: f.input,
    result: f.result,
    message: f.message,
  };
}

/** oslo.serialization's datetime form: 2026-12-07T08:47:16.854000 */
function rowTime(d: Date): string {
  return `${d.toISOString().slice(0, 23)}000`;
}

/**
 * The import's URL as a task shows it to everyone who sees the image: without credentials and
 * query (where presigned URLs carry their signature).
 */
function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    u.hash = '';
    return u.href;
  } catch {
    return url.split(/[?#]/)[0]!.slice(0, 2000);
  }
}
