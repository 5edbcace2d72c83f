/** `GET /api/v1/images` query parameters → the catalog's ImageQuery, with messages that say what to send. */
import { VISIBILITIES } from '../../domain/access/policy.js';
import { DomainError } from '../../domain/errors.js';
import type { ImageQuery, ImageSortKey } from '../../domain/images/image.js';
import { IMAGE_STATES } from '../../domain/images/lifecycle.js';

const SORT_KEYS: readonly ImageSortKey[] = ['name', 'createdAt', 'updatedAt', 'storedSize', 'virtualSize'];

export function parseListQuery(q: Record<string, unknown>): ImageQuery {
  const list = (k: string): string[] | undefined => {
    const v = q[k];
    if (v === undefined) return undefined;
    const items = (Array.isArray(v) ? v : [v])
      .flatMap((x) => String(x).split(','))
      .map((x) => x.trim())
      .filter(Boolean);
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
    query.sort = [{ key: key as ImageSortKey, dir }];
  }
  if (typeof q.cursor === 'string') query.cursor = q.cursor;
  if (typeof q.project === 'string') query.project = q.project;
  const vis = list('visibility');
  if (vis) {
    for (const v of vis)
      if (!(VISIBILITIES as readonly string[]).includes(v))
        throw new DomainError('INVALID_REQUEST', `visibility "${v}" is not one of ${VISIBILITIES.join(', ')}`);
    query.visibility = vis as ImageQuery['visibility'];
  }
  if (typeof q.memberStatus === 'string') query.memberStatus = q.memberStatus as ImageQuery['memberStatus'];
  const states: readonly string[] = IMAGE_STATES;
  for (const s of query.state ?? []) if (!states.includes(s)) throw new DomainError('INVALID_REQUEST', `state "${s}" is not one of ${states.join(', ')}`);
  return query;
}
