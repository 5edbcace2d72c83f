/**
 * `GET /v2/images` query parameters as Glance takes them → the catalog's ImageQuery, and the
 * `first`/`next` links as Glance builds them (glanceclient follows `next` to page through).
 */
import type { ImageQuery, ImageSort, ImageSortKey } from '../../domain/images/image.js';
import type { ImageState } from '../../domain/images/lifecycle.js';
import { CONTAINER_FORMATS, DISK_FORMATS } from '../../domain/images/image.js';
import { VISIBILITIES } from '../../domain/access/policy.js';
import { GlanceError } from './error-table.js';

/** Glance's `api_limit_max` and `limit_param_default` */
const LIMIT_MAX = 1000;
const LIMIT_DEFAULT = 25;

/** Glance's sort keys (its `_available_sort_keys`, and virtual_size) → the catalog's; any other is 400, as in Glance. */
const SORT_KEYS: Record<string, ImageSortKey> = {
  name: 'name',
  status: 'state',
  container_format: 'containerFormat',
  disk_format: 'diskFormat',
  size: 'storedSize',
  id: 'id',
  created_at: 'createdAt',
  updated_at: 'updatedAt',
  virtual_size: 'virtualSize',
};

const STATES_OF: Record<string, ImageState[]> = {
  queued: ['pending'],
  saving: ['importing'],
  uploading: ['importing', 'staged'],
  importing: ['importing'],
  active: ['ready', 'locked'],
  deactivated: ['disabled'],
  killed: ['error'],
  deleted: ['deleting'],
  pending_delete: ['deleting'],
};

/** Keys with a meaning of their own; any other key filters on a property of that name. */
const KNOWN = new Set([
  'limit',
  'marker',
  'sort',
  'sort_key',
  'sort_dir',
  'name',
  'status',
  'visibility',
  'owner',
  'member_status',
  'tag',
  'disk_format',
  'container_format',
  'size_min',
  'size_max',
  'protected',
  'os_hidden',
  'created_at',
  'updated_at',
  'id',
]);

export interface GlanceListQuery {
  query: ImageQuery;
  /** the image id to start after */
  marker?: string;
  /** the id filter (`id=in:...`), applied to the page */
  ids?: string[];
}

export function parseGlanceListQuery(q: Record<string, unknown>): GlanceListQuery {
  const one = (k: string): string | undefined => {
    const v = q[k];
    if (v === undefined) return undefined;
    if (Array.isArray(v)) throw new GlanceError(400, `Parameter ${k} may be given once.`);
    return String(v);
  };
  const values = (k: string): string[] | undefined => {
    const v = one(k);
    if (v === undefined) return undefined;
    return v.startsWith('in:') ? splitIn(v.slice(3)) : [v];
  };
  const query: ImageQuery = { limit: LIMIT_DEFAULT, hidden: false };
  const limit = one('limit');
  if (limit !== undefined) {
    if (!/^\d{1,9}$/.test(limit)) throw new GlanceError(400, 'limit param must be an integer');
    const n = Number(limit);
    if (n < 0) throw new GlanceError(400, 'limit param must be positive');
    query.limit = Math.max(1, Math.min(n, LIMIT_MAX));
  }
  const names = values('name');
  // Glance compares names exactly (`name=in:a,b`: any of them)
  if (names) query.names = names;
  const status = values('status');
  if (status) {
    query.state = status.flatMap((s) => {
      const st = Object.hasOwn(STATES_OF, s.toLowerCase()) ? STATES_OF[s.toLowerCase()] : undefined;
      if (!st) throw new GlanceError(400, `Invalid status value: ${s.slice(0, 40)}`);
      return st;
    });
  }
  const visibility = one('visibility');
  // `all` lists community images of other projects too (Glance leaves them out unless asked)
  if (visibility === 'all') query.visibility = [...VISIBILITIES];
  else if (visibility !== undefined) {
    if (visibility === 'private') query.visibility = ['private', 'project'];
    else if (visibility === 'shared' || visibility === 'public' || visibility === 'community') query.visibility = [visibility];
    else throw new GlanceError(400, `Invalid visibility value: ${visibility.slice(0, 40)}`);
  }
  const owner = one('owner');
  if (owner !== undefined) query.project = owner;
  const member = one('member_status');
  if (member !== undefined) {
    // as Glance: which other projects' shared images are listed with the rest (default accepted)
    if (member !== 'pending' && member !== 'accepted' && member !== 'rejected' && member !== 'all')
      throw new GlanceError(400, `Invalid status value: ${member.slice(0, 40)}`);
    query.sharedStatus = member;
  }
  const tags = q.tag === undefined ? undefined : (Array.isArray(q.tag) ? q.tag : [q.tag]).map(String);
  if (tags) query.tags = tags;
  const disk = values('disk_format');
  if (disk) query.diskFormat = disk.map((d) => oneOf('disk_format', d, DISK_FORMATS));
  const container = values('container_format');
  if (container) query.containerFormat = container.map((c) => oneOf('container_format', c, CONTAINER_FORMATS));
  for (const [k, field] of [
    ['size_min', 'sizeMin'],
    ['size_max', 'sizeMax'],
  ] as const) {
    const v = one(k);
    if (v === undefined) continue;
    if (!/^\d{1,16}$/.test(v)) throw new GlanceError(400, `Invalid value for ${k}: ${v.slice(0, 40)}; it must be a byte count.`);
    query[field] = Number(v);
  }
  const prot = one('protected');
  if (prot !== undefined) query.protected = bool('protected', prot);
  const hidden = one('os_hidden');
  if (hidden !== undefined) query.hidden = bool('os_hidden', hidden);
  dateFilter(one('created_at'), 'created_at', query, 'createdAfter', 'createdBefore');
  dateFilter(one('updated_at'), 'updated_at', query, 'updatedAfter', 'updatedBefore');
  for (const [k, v] of Object.entries(q)) {
    if (KNOWN.has(k)) continue;
    // a map without a prototype: the keys are the client's
    (query.properties ??= Object.create(null) as Record<string, string>)[k] = Array.isArray(v) ? String(v[0]) : String(v);
  }
  query.sort = parseSort(q);
  const out: GlanceListQuery = { query };
  const marker = one('marker');
  if (marker !== undefined) out.marker = marker;
  const ids = values('id');
  if (ids) out.ids = ids;
  return out;
}

/**
 * Glance's two sort syntaxes: `sort=k1:dir,k2` (a key without a direction: desc) or `sort_key`
 * repeated (or comma-separated) with `sort_dir` once for all keys or once per key. Default
 * created_at desc; the catalog breaks ties by id.
 */
function parseSort(q: Record<string, unknown>): ImageSort[] {
  const list = (v: unknown) =>
    v === undefined
      ? []
      : (Array.isArray(v) ? v : [v])
          .flatMap((x) => String(x).split(','))
          .map((x) => x.trim())
          .filter(Boolean);
  let pairs: [string, string][];
  if (q.sort !== undefined) {
    if (q.sort_key !== undefined || q.sort_dir !== undefined) throw new GlanceError(400, 'The "sort" parameter cannot be combined with sort_key or sort_dir.');
    pairs = list(q.sort).map((item) => {
      const [k = '', d = 'desc', extra] = item.split(':');
      if (extra !== undefined) throw new GlanceError(400, `Invalid sort value: ${item.slice(0, 60)}; use key or key:asc / key:desc.`);
      return [k.trim(), d.trim()];
    });
  } else {
    const keys = list(q.sort_key);
    const dirs = list(q.sort_dir);
    if (keys.length === 0) keys.push('created_at');
    if (dirs.length > 1 && dirs.length !== keys.length)
      throw new GlanceError(400, 'Number of sort dirs does not match the number of sort keys: give one sort_dir for all keys or one per key.');
    pairs = keys.map((k, i) => [k, dirs.length === 0 ? 'desc' : dirs.length === 1 ? dirs[0]! : dirs[i]!]);
  }
  if (pairs.length === 0) pairs = [['created_at', 'desc']];
  const seen = new Set<string>();
  return pairs.map(([key, dir]) => {
    const sortKey = Object.hasOwn(SORT_KEYS, key) ? SORT_KEYS[key] : undefined;
    if (!sortKey) throw new GlanceError(400, `Unsupported sort_key: ${key.slice(0, 40)}; this server sorts by ${Object.keys(SORT_KEYS).join(', ')}.`);
    if (seen.has(key)) throw new GlanceError(400, `Sort key ${key.slice(0, 40)} is given twice; each key may appear once.`);
    seen.add(key);
    if (dir !== 'asc' && dir !== 'desc') throw new GlanceError(400, `Invalid sort direction: ${dir.slice(0, 40)}`);
    return { key: sortKey, dir };
  });
}

function dateFilter(
  v: string | undefined,
  name: string,
  query: ImageQuery,
  after: 'createdAfter' | 'updatedAfter',
  before: 'createdBefore' | 'updatedBefore',
): void {
  if (v === undefined) return;
  const m = /^(gt|gte|lt|lte|eq):(.+)$/.exec(v);
  if (!m) throw new GlanceError(400, `Invalid ${name} filter: ${v.slice(0, 60)}; use gt:, gte:, lt:, lte: or eq: and an ISO 8601 time.`);
  const d = new Date(m[2]!);
  if (Number.isNaN(d.getTime())) throw new GlanceError(400, `Unable to parse datetime '${m[2]!.slice(0, 60)}'.`);
  const ms = d.getTime();
  // the catalog's bounds are after ≥, before <; Glance's times are whole seconds
  if (m[1] === 'gt') query[after] = new Date(ms + 1000);
  if (m[1] === 'gte' || m[1] === 'eq') query[after] = new Date(ms);
  if (m[1] === 'lt') query[before] = new Date(ms);
  if (m[1] === 'lte' || m[1] === 'eq') query[before] = new Date(ms + 1000);
}

function splitIn(v: string): string[] {
  return v
    .split(',')
    .map((x) => x.trim().replace(/^"(.*)"$/, '$1'))
    .filter(Boolean);
}

function bool(name: string, v: string): boolean {
  if (/^(true|1|yes|on)$/i.test(v)) return true;
  if (/^(false|0|no|off)$/i.test(v)) return false;
  throw new GlanceError(400, `Invalid value for ${name}: ${v.slice(0, 40)}; use true or false.`);
}

function oneOf<T extends string>(name: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v)) throw new GlanceError(400, `Invalid ${name} value: ${v.slice(0, 40)}`);
  return v as T;
}

/** `first` and `next` as Glance writes them: the request's own parameters, the marker replaced. */
export function pageLinks(rawQuery: string, nextMarker: string | undefined): { first: string; next?: string } {
  const params = new URLSearchParams(rawQuery);
  params.delete('marker');
  const base = params.toString();
  const links: { first: string; next?: string } = { first: base ? `/v2/images?${base}` : '/v2/images' };
  if (nextMarker !== undefined) {
    params.append('marker', nextMarker);
    links.next = `/v2/images?${params.toString()}`;
  }
  return links;
}
