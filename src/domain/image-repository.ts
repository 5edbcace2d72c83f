/**
 * The image repository on Kysely: one implementation for SQLite and PostgreSQL. Tags and
 * properties live both in the row (read back as-is) and in side tables (filtered with EXISTS);
 * both are written in the same transaction. Lists use keyset pagination (never OFFSET): the
 * cursor carries the last row's sort value and id.
 */
import { sql, type Expression, type Kysely, type SqlBool, type Transaction } from 'kysely';
import type { Database } from '../db/database.js';
import type { ImagesTable, Schema } from '../db/schema.js';
import type { Digest } from '../store/blob-store.js';
import { DomainError, invalid } from './errors.js';
import type { Image, ImagePage, ImagePatch, ImageQuery, ImageRepository, ImageSortKey } from './image.js';
import type { ImageState } from './lifecycle.js';

type Db = Kysely<Schema> | Transaction<Schema>;

const SORT_COLUMN: Record<ImageSortKey, string> = {
  name: 'name',
  createdAt: 'created_at',
  updatedAt: 'updated_at',
  storedSize: 'coalesce(stored_size, -1)',
  virtualSize: 'coalesce(virtual_size, -1)',
};

export class KyselyImageRepository implements ImageRepository {
  private readonly db: Kysely<Schema>;
  constructor(database: Database) {
    this.db = database.kysely;
  }

  async create(image: Image, idempotency?: { key: string; requestHash: string }): Promise<{ image: Image; replayed: boolean }> {
    try {
      return await this.db.transaction().execute(async (trx) => {
        if (idempotency) {
          const prior = await this.replay(trx, idempotency);
          if (prior) return prior;
        }
        await trx.insertInto('images').values(toRow(image)).execute();
        await writeSide(trx, image.id, image.tags, image.properties);
        if (idempotency) {
          await trx.insertInto('idempotency_keys').values({ key: idempotency.key, request_hash: idempotency.requestHash, image_id: image.id, created_at: Date.now() }).execute();
        }
        return { image, replayed: false };
      });
    } catch (e) {
      // two creates raced with one key: the loser replays the winner's image
      if (idempotency && isUniqueViolation(e)) {
        const prior = await this.replay(this.db, idempotency);
        if (prior) return prior;
      }
      throw e;
    }
  }

  private async replay(db: Db, idem: { key: string; requestHash: string }): Promise<{ image: Image; replayed: true } | undefined> {
    const row = await db.selectFrom('idempotency_keys').selectAll().where('key', '=', idem.key).executeTakeFirst();
    if (!row) return undefined;
    if (row.request_hash !== idem.requestHash) {
      throw new DomainError('IDEMPOTENCY_MISMATCH', `Idempotency-Key "${idem.key}" was already used for a different request; use a new key for a new image`, { key: idem.key });
    }
    const img = await this.getWith(db, row.image_id);
    if (!img) throw new DomainError('IMAGE_NOT_FOUND', `the image created with Idempotency-Key "${idem.key}" was deleted since`, { key: idem.key });
    return { image: img, replayed: true };
  }

  get(id: string): Promise<Image | undefined> {
    return this.getWith(this.db, id);
  }

  private async getWith(db: Db, id: string): Promise<Image | undefined> {
    const row = await db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }

  async list(q: ImageQuery): Promise<ImagePage> {
    if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > 1000) throw invalid(`limit must be between 1 and 1000 (got ${q.limit})`);
    const sortKey = q.sort?.key ?? 'createdAt';
    const dir = q.sort?.dir ?? 'asc';
    const col = sql.raw(SORT_COLUMN[sortKey]);
    let query = this.db.selectFrom('images').selectAll();
    if (q.state?.length) query = query.where('state', 'in', q.state);
    else query = query.where('state', '!=', 'deleting');
    if (q.name !== undefined) {
      if (q.name.endsWith('*')) {
        const prefix = q.name.slice(0, -1).replace(/[\\%_]/g, (c) => `\\${c}`);
        query = query.where(sql<SqlBool>`name like ${`${prefix}%`} escape '\\'`);
      } else query = query.where('name', '=', q.name);
    }
    if (q.type?.length) query = query.where('type', 'in', q.type);
    if (q.diskFormat?.length) query = query.where('disk_format', 'in', q.diskFormat);
    for (const tag of q.tags ?? []) {
      query = query.where(({ exists, selectFrom }) => exists(selectFrom('image_tags').select('tag').whereRef('image_tags.image_id', '=', 'images.id').where('tag', '=', tag)));
    }
    for (const [k, v] of Object.entries(q.properties ?? {})) {
      query = query.where(({ exists, selectFrom }) =>
        exists(selectFrom('image_properties').select('key').whereRef('image_properties.image_id', '=', 'images.id').where('key', '=', k).where('value', '=', v)),
      );
    }
    if (q.createdAfter) query = query.where('created_at', '>=', q.createdAfter.getTime());
    if (q.createdBefore) query = query.where('created_at', '<', q.createdBefore.getTime());
    if (q.updatedAfter) query = query.where('updated_at', '>=', q.updatedAfter.getTime());
    if (q.updatedBefore) query = query.where('updated_at', '<', q.updatedBefore.getTime());
    if (q.cursor) {
      const c = decodeCursor(q.cursor, sortKey);
      const op = sql.raw(dir === 'asc' ? '>' : '<');
      query = query.where(sql<SqlBool>`(${col} ${op} ${c.v} or (${col} = ${c.v} and id ${op} ${c.id}))` as Expression<SqlBool>);
    }
    const rows = await query
      .orderBy(sql`${col} ${sql.raw(dir)}`)
      .orderBy('id', dir)
      .limit(q.limit + 1)
      .execute();
    const items = rows.slice(0, q.limit).map(fromRow);
    const page: ImagePage = { items };
    if (rows.length > q.limit) {
      const last = items[items.length - 1]!;
      page.nextCursor = encodeCursor(sortKey, sortValue(last, sortKey), last.id);
    }
    return page;
  }

  async update(id: string, patch: ImagePatch, cond: { fromStates?: readonly ImageState[]; expectedVersion?: number } = {}): Promise<Image | undefined> {
    return this.db.transaction().execute(async (trx) => {
      let u = trx
        .updateTable('images')
        .set({ ...toPatchRow(patch), updated_at: Date.now(), version: sql`version + 1` })
        .where('id', '=', id);
      if (cond.fromStates) u = u.where('state', 'in', [...cond.fromStates]);
      if (cond.expectedVersion !== undefined) u = u.where('version', '=', cond.expectedVersion);
      const row = await u.returningAll().executeTakeFirst();
      if (!row) return undefined;
      if (patch.tags !== undefined || patch.properties !== undefined) {
        const img = fromRow(row);
        if (patch.tags !== undefined) await trx.deleteFrom('image_tags').where('image_id', '=', id).execute();
        if (patch.properties !== undefined) await trx.deleteFrom('image_properties').where('image_id', '=', id).execute();
        await writeSide(trx, id, patch.tags !== undefined ? img.tags : [], patch.properties !== undefined ? img.properties : {});
      }
      return fromRow(row);
    });
  }

  async remove(id: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('image_tags').where('image_id', '=', id).execute();
      await trx.deleteFrom('image_properties').where('image_id', '=', id).execute();
      const r = await trx.deleteFrom('images').where('id', '=', id).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async inStates(states: readonly ImageState[]): Promise<Image[]> {
    const rows = await this.db.selectFrom('images').selectAll().where('state', 'in', [...states]).execute();
    return rows.map(fromRow);
  }

  async referencedDigests(): Promise<Set<Digest>> {
    const rows = await this.db.selectFrom('images').select('digest').distinct().where('digest', 'is not', null).execute();
    return new Set(rows.map((r) => r.digest as Digest));
  }

  async count(): Promise<number> {
    const r = await this.db.selectFrom('images').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }
}

async function writeSide(db: Db, id: string, tags: string[], properties: Record<string, string>): Promise<void> {
  if (tags.length) await db.insertInto('image_tags').values(tags.map((tag) => ({ image_id: id, tag }))).execute();
  const props = Object.entries(properties);
  if (props.length) await db.insertInto('image_properties').values(props.map(([key, value]) => ({ image_id: id, key, value }))).execute();
}

function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

// ---- cursor ------------------------------------------------------------------------------

function sortValue(img: Image, key: ImageSortKey): string | number {
  switch (key) {
    case 'name':
      return img.name;
    case 'createdAt':
      return img.createdAt.getTime();
    case 'updatedAt':
      return img.updatedAt.getTime();
    case 'storedSize':
      return img.storedSize ?? -1;
    case 'virtualSize':
      return img.virtualSize ?? -1;
  }
}

function encodeCursor(key: ImageSortKey, v: string | number, id: string): string {
  return Buffer.from(JSON.stringify({ k: key, v, id })).toString('base64url');
}

function decodeCursor(cursor: string, key: ImageSortKey): { v: string | number; id: string } {
  try {
    const c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { k: string; v: unknown; id: unknown };
    const ok = c.k === key && typeof c.id === 'string' && (key === 'name' ? typeof c.v === 'string' : typeof c.v === 'number');
    if (ok) return { v: c.v as string | number, id: c.id as string };
  } catch {
    // fall through
  }
  throw invalid('cursor is not one this list returned (or the sort changed); start again without a cursor');
}

// ---- rows ----------------------------------------------------------------------------------

function toRow(img: Image): ImagesTable {
  return {
    id: img.id,
    name: img.name,
    description: img.description ?? null,
    type: img.type,
    disk_format: img.diskFormat ?? null,
    container_format: img.containerFormat ?? null,
    architecture: img.architecture ?? null,
    os_distro: img.osDistro ?? null,
    os_version: img.osVersion ?? null,
    os_type: img.osType ?? null,
    min_disk: img.minDisk,
    min_ram: img.minRam,
    persistent: img.persistent ? 1 : 0,
    properties: JSON.stringify(img.properties),
    tags: JSON.stringify(img.tags),
    state: img.state,
    state_reason: img.stateReason ?? null,
    progress: img.progress ?? null,
    ingest_kind: img.ingestKind ?? null,
    ingest_id: img.ingestId ?? null,
    lock_reason: img.lockReason ?? null,
    used_by: img.usedBy,
    digest: img.digest ?? null,
    stored_size: img.storedSize ?? null,
    virtual_size: img.virtualSize ?? null,
    checksum_md5: img.checksums.md5 ?? null,
    checksum_sha512: img.checksums.sha512 ?? null,
    inspection: img.inspection ? JSON.stringify(img.inspection) : null,
    created_at: img.createdAt.getTime(),
    updated_at: img.updatedAt.getTime(),
    version: img.version,
  };
}

const PATCH_COLUMNS: Record<string, keyof ImagesTable> = {
  name: 'name',
  description: 'description',
  type: 'type',
  diskFormat: 'disk_format',
  containerFormat: 'container_format',
  architecture: 'architecture',
  osDistro: 'os_distro',
  osVersion: 'os_version',
  osType: 'os_type',
  minDisk: 'min_disk',
  minRam: 'min_ram',
  state: 'state',
  stateReason: 'state_reason',
  progress: 'progress',
  ingestKind: 'ingest_kind',
  ingestId: 'ingest_id',
  lockReason: 'lock_reason',
  usedBy: 'used_by',
  digest: 'digest',
  storedSize: 'stored_size',
  virtualSize: 'virtual_size',
};

function toPatchRow(p: ImagePatch): Partial<ImagesTable> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (v === undefined) continue;
    const col = PATCH_COLUMNS[k];
    if (col) out[col] = v;
  }
  if (p.persistent !== undefined) out.persistent = p.persistent ? 1 : 0;
  if (p.properties !== undefined) out.properties = JSON.stringify(p.properties ?? {});
  if (p.tags !== undefined) out.tags = JSON.stringify(p.tags ?? []);
  if (p.checksums !== undefined) {
    out.checksum_md5 = p.checksums?.md5 ?? null;
    out.checksum_sha512 = p.checksums?.sha512 ?? null;
  }
  if (p.inspection !== undefined) out.inspection = p.inspection === null ? null : JSON.stringify(p.inspection);
  return out as Partial<ImagesTable>;
}

function fromRow(r: ImagesTable): Image {
  const img: Image = {
    id: r.id,
    name: r.name,
    type: r.type as Image['type'],
    minDisk: Number(r.min_disk),
    minRam: Number(r.min_ram),
    persistent: Number(r.persistent) === 1,
    properties: JSON.parse(r.properties) as Record<string, string>,
    tags: JSON.parse(r.tags) as string[],
    state: r.state as ImageState,
    usedBy: Number(r.used_by),
    checksums: {},
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
    version: Number(r.version),
  };
  if (r.description !== null) img.description = r.description;
  if (r.disk_format !== null) img.diskFormat = r.disk_format as Image['diskFormat'];
  if (r.container_format !== null) img.containerFormat = r.container_format as Image['containerFormat'];
  if (r.architecture !== null) img.architecture = r.architecture;
  if (r.os_distro !== null) img.osDistro = r.os_distro;
  if (r.os_version !== null) img.osVersion = r.os_version;
  if (r.os_type !== null) img.osType = r.os_type;
  if (r.state_reason !== null) img.stateReason = r.state_reason;
  if (r.progress !== null) img.progress = Number(r.progress);
  if (r.ingest_kind !== null) img.ingestKind = r.ingest_kind as Image['ingestKind'];
  if (r.ingest_id !== null) img.ingestId = r.ingest_id;
  if (r.lock_reason !== null) img.lockReason = r.lock_reason as Image['lockReason'];
  if (r.digest !== null) img.digest = r.digest as Digest;
  if (r.stored_size !== null) img.storedSize = Number(r.stored_size);
  if (r.virtual_size !== null) img.virtualSize = Number(r.virtual_size);
  if (r.checksum_md5 !== null) img.checksums.md5 = r.checksum_md5;
  if (r.checksum_sha512 !== null) img.checksums.sha512 = r.checksum_sha512;
  if (r.inspection !== null) img.inspection = JSON.parse(r.inspection) as Image['inspection'];
  return img;
}
