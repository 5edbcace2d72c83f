/**
 * The image repository on Kysely: one implementation for SQLite and PostgreSQL. Tags and
 * properties live both in the row (read back as-is) and in side tables (filtered with EXISTS);
 * both are written in the same transaction. Lists use keyset pagination (never OFFSET): the
 * cursor carries the last row's sort value and id.
 */
import {
  sql,
  type Expression,
  type Insertable,
  type Selectable,
  type Updateable,
  type ExpressionBuilder,
  type Kysely,
  type NotNull,
  type SqlBool,
  type Transaction,
} from 'kysely';
import { isUniqueViolation, type Database } from './database.js';
import { ociProjectBytes } from './registry-repository.js';
import type { ImageMembersTable, ImagesTable, ImageVariantsTable, Schema } from './schema.js';
import type { Digest } from '../store/blob-store.js';
import { DomainError, invalid } from '../domain/errors.js';
import type { MemberStatus } from '../domain/access/policy.js';
import type {
  AccessScope,
  Image,
  ImageMember,
  ImagePage,
  ImagePatch,
  ImageQuery,
  ImageRepository,
  ImageSort,
  ImageSortKey,
  ImageVariant,
  ProjectTx,
  ProjectUsage,
} from '../domain/images/image.js';
import type { ImageState } from '../domain/images/lifecycle.js';

type Db = Kysely<Schema> | Transaction<Schema>;

/**
 * Each sort key's column as the order compares it: an absent value is coalesced to one below every
 * present one ('' or -1), so NULLs take part in keyset comparisons (the marker and cursor).
 */
const SORT_COLUMN: Record<ImageSortKey, string> = {
  name: 'name',
  createdAt: 'created_at',
  updatedAt: 'updated_at',
  storedSize: 'coalesce(stored_size, -1)',
  virtualSize: 'coalesce(virtual_size, -1)',
  state: 'state',
  diskFormat: "coalesce(disk_format, '')",
  containerFormat: "coalesce(container_format, '')",
  id: 'id',
};

/** Keys whose value compares as a number (the rest as text). */
const NUMERIC_SORT: ReadonlySet<ImageSortKey> = new Set(['createdAt', 'updatedAt', 'storedSize', 'virtualSize']);

/**
 * Rows strictly after the row with these sort `values` and `id` in the order `keys` (then id, in
 * the last key's direction): the keyset predicate of a marker or cursor, for any mix of directions.
 */
function after(keys: ImageSort[], values: (string | number)[], id: string): Expression<SqlBool> {
  const op = (dir: 'asc' | 'desc') => sql.raw(dir === 'asc' ? '>' : '<');
  const col = (k: ImageSortKey) => sql.raw(SORT_COLUMN[k]);
  const terms = [];
  for (let i = 0; i <= keys.length; i++) {
    const eqs = keys.slice(0, i).map((k, j) => sql`${col(k.key)} = ${values[j]}`);
    const last = i < keys.length ? sql`${col(keys[i]!.key)} ${op(keys[i]!.dir)} ${values[i]}` : sql`id ${op(keys[keys.length - 1]!.dir)} ${id}`;
    terms.push(sql`(${sql.join([...eqs, last], sql` and `)})`);
  }
  return sql<SqlBool>`(${sql.join(terms, sql` or `)})` as Expression<SqlBool>;
}

export class KyselyImageRepository implements ImageRepository {
  private readonly db: Kysely<Schema>;
  private readonly dialect: Database['dialect'];
  constructor(database: Database) {
    this.db = database.kysely;
    this.dialect = database.dialect;
  }

  async create(image: Image, idempotency?: { key: string; requestHash: string }): Promise<{ image: Image; replayed: boolean }> {
    try {
      return await this.db.transaction().execute(async (trx) => {
        return this.createIn(trx, image, idempotency);
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

  private async createIn(
    trx: Transaction<Schema>,
    image: Image,
    idempotency?: { key: string; requestHash: string },
    check?: () => Promise<void>,
  ): Promise<{ image: Image; replayed: boolean }> {
    if (idempotency) {
      const prior = await this.replay(trx, idempotency);
      if (prior) return prior;
    }
    await check?.();
    await trx.insertInto('images').values(toRow(image)).execute();
    await writeSide(trx, image.id, image.tags, image.properties);
    if (idempotency) {
      await trx
        .insertInto('idempotency_keys')
        .values({ key: idempotency.key, request_hash: idempotency.requestHash, image_id: image.id, created_at: Date.now() })
        .execute();
    }
    return { image, replayed: false };
  }

  private async replay(db: Db, idem: { key: string; requestHash: string }): Promise<{ image: Image; replayed: true } | undefined> {
    const row = await db.selectFrom('idempotency_keys').selectAll().where('key', '=', idem.key).executeTakeFirst();
    if (!row) return undefined;
    if (row.request_hash !== idem.requestHash) {
      throw new DomainError('IDEMPOTENCY_MISMATCH', `Idempotency-Key "${idem.key}" was already used for a different request; use a new key for a new image`, {
        key: idem.key,
      });
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
    const order: ImageSort[] = q.sort?.length ? q.sort : [{ key: 'createdAt', dir: 'asc' }];
    let query = this.db.selectFrom('images').selectAll();
    if (q.access) query = query.where(visibleTo(q.access, q.memberStatus, q.sharedStatus ?? 'accepted', q.visibility?.includes('community') === true));
    if (q.project !== undefined) query = query.where('project', '=', q.project);
    if (q.visibility?.length) query = query.where('visibility', 'in', q.visibility);
    if (q.state?.length) query = query.where('state', 'in', q.state);
    else query = query.where('state', '!=', 'deleting');
    if (q.names !== undefined) query = q.names.length ? query.where('name', 'in', q.names) : query.where(sql<SqlBool>`1 = 0`);
    if (q.name !== undefined) {
      if (q.name.endsWith('*')) {
        const prefix = q.name.slice(0, -1).replace(/[\\%_]/g, (c) => `\\${c}`);
        query = query.where(sql<SqlBool>`name like ${`${prefix}%`} escape '\\'`);
      } else query = query.where('name', '=', q.name);
    }
    if (q.type?.length) query = query.where('type', 'in', q.type);
    if (q.diskFormat?.length) query = query.where('disk_format', 'in', q.diskFormat);
    if (q.containerFormat?.length) query = query.where('container_format', 'in', q.containerFormat);
    if (q.sizeMin !== undefined) query = query.where('stored_size', '>=', q.sizeMin);
    if (q.sizeMax !== undefined) query = query.where('stored_size', '<=', q.sizeMax);
    if (q.protected !== undefined) query = query.where('is_protected', '=', q.protected ? 1 : 0);
    if (q.hidden !== undefined) query = query.where('hidden', '=', q.hidden ? 1 : 0);
    for (const tag of q.tags ?? []) {
      query = query.where(({ exists, selectFrom }) =>
        exists(selectFrom('image_tags').select('tag').whereRef('image_tags.image_id', '=', 'images.id').where('tag', '=', tag)),
      );
    }
    for (const [k, v] of Object.entries(q.properties ?? {})) {
      query = query.where(({ exists, selectFrom }) =>
        exists(
          selectFrom('image_properties').select('key').whereRef('image_properties.image_id', '=', 'images.id').where('key', '=', k).where('value', '=', v),
        ),
      );
    }
    if (q.createdAfter) query = query.where('created_at', '>=', q.createdAfter.getTime());
    if (q.createdBefore) query = query.where('created_at', '<', q.createdBefore.getTime());
    if (q.updatedAfter) query = query.where('updated_at', '>=', q.updatedAfter.getTime());
    if (q.updatedBefore) query = query.where('updated_at', '<', q.updatedBefore.getTime());
    if (q.marker !== undefined) {
      const m = await this.db.selectFrom('images').selectAll().where('id', '=', q.marker).executeTakeFirst();
      if (!m) throw invalid(`marker ${q.marker} is not an image id; start again without a marker`, { field: 'marker' });
      const marker = fromRow(m);
      query = query.where(
        after(
          order,
          order.map((o) => sortValue(marker, o.key)),
          marker.id,
        ),
      );
    }
    if (q.cursor) {
      const c = decodeCursor(q.cursor, order);
      query = query.where(after(order, c.v, c.id));
    }
    for (const o of order) query = query.orderBy(sql`${sql.raw(SORT_COLUMN[o.key])} ${sql.raw(o.dir)}`);
    const rows = await query
      .orderBy('id', order[order.length - 1]!.dir)
      .limit(q.limit + 1)
      .execute();
    const items = rows.slice(0, q.limit).map(fromRow);
    const page: ImagePage = { items };
    if (rows.length > q.limit) {
      const last = items[items.length - 1]!;
      page.nextCursor = encodeCursor(
        order,
        order.map((o) => sortValue(last, o.key)),
        last.id,
      );
    }
    return page;
  }

  async update(id: string, patch: ImagePatch, cond: { fromStates?: readonly ImageState[]; expectedVersion?: number } = {}): Promise<Image | undefined> {
    return this.db.transaction().execute((trx) => updateIn(trx, id, patch, cond));
  }

  /**
   * Runs `fn` with the project's quota row locked (PostgreSQL: SELECT ... FOR UPDATE; SQLite:
   * its single writer), so check-then-write on a project's usage cannot race.
   */
  async underProjectLock<T>(project: string, fn: (tx: ProjectTx) => Promise<T>): Promise<T> {
    return this.withProjectLock(project, (trx, tx) => fn(tx));
  }

  /**
   * `underProjectLock` with the transaction itself, for other tables' writes that draw on the same
   * quota (the OCI registry's: db/registry-repository.ts `underQuota`).
   */
  async withProjectLock<T>(project: string, fn: (trx: Transaction<Schema>, tx: ProjectTx) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      const sel = trx.selectFrom('projects').selectAll().where('name', '=', project);
      // SQLite has one writer and Kysely runs its transaction on the one connection: already exclusive
      const row = await (this.dialect === 'postgres' ? sel.forUpdate() : sel).executeTakeFirst();
      if (!row) throw new DomainError('INVALID_REQUEST', `project "${project}" does not exist; create it with "imago project create ${project}"`, { project });
      const tx: ProjectTx = {
        limits: {
          images: row.max_images === null ? undefined : Number(row.max_images),
          storedBytes: row.max_stored_bytes === null ? undefined : Number(row.max_stored_bytes),
          stagingBytes: row.max_staging_bytes === null ? undefined : Number(row.max_staging_bytes),
          imports: row.max_imports === null ? undefined : Number(row.max_imports),
        },
        usage: (exceptImage?: string, asHolding?: Digest) => usageIn(trx, project, exceptImage, undefined, asHolding),
        create: (image, idempotency, check) => this.createIn(trx, image, idempotency, check),
        update: (id, patch, cond = {}) => updateIn(trx, id, patch, cond),
      };
      return fn(trx, tx);
    });
  }

  usage(project: string, viewer?: AccessScope): Promise<ProjectUsage> {
    return usageIn(this.db, project, undefined, viewer);
  }

  async remove(id: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('image_tags').where('image_id', '=', id).execute();
      await trx.deleteFrom('image_properties').where('image_id', '=', id).execute();
      await trx.deleteFrom('image_variants').where('image_id', '=', id).execute();
      const r = await trx.deleteFrom('images').where('id', '=', id).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async inStates(states: readonly ImageState[]): Promise<Image[]> {
    const rows = await this.db
      .selectFrom('images')
      .selectAll()
      .where('state', 'in', [...states])
      .execute();
    return rows.map(fromRow);
  }

  async referencedDigests(): Promise<Set<Digest>> {
    const rows = await this.db.selectFrom('images').select('digest').distinct().where('digest', 'is not', null).$narrowType<{ digest: NotNull }>().execute();
    const variants = await this.db.selectFrom('image_variants').select('digest').distinct().execute();
    return new Set([...rows.map((r) => r.digest), ...variants.map((r) => r.digest)]);
  }

  async variant(imageId: string, format: string, optionsKey: string): Promise<ImageVariant | undefined> {
    const row = await this.db
      .selectFrom('image_variants')
      .selectAll()
      .where('image_id', '=', imageId)
      .where('format', '=', format)
      .where('options_key', '=', optionsKey)
      .executeTakeFirst();
    return row ? variantFromRow(row) : undefined;
  }

  async variants(imageId: string): Promise<ImageVariant[]> {
    const rows = await this.db.selectFrom('image_variants').selectAll().where('image_id', '=', imageId).orderBy('format').orderBy('options_key').execute();
    return rows.map(variantFromRow);
  }

  async putVariant(v: ImageVariant): Promise<boolean> {
    return this.db.transaction().execute((trx) => putVariantIn(trx, v));
  }

  async finishConversion(
    id: string,
    patch: ImagePatch,
    cond: { fromStates?: readonly ImageState[]; expectedVersion?: number },
    keep: ImageVariant,
  ): Promise<Image | undefined> {
    return this.db
      .transaction()
      .execute(async (trx) => {
        if (!(await putVariantIn(trx, keep))) return undefined;
        const updated = await updateIn(trx, id, patch, cond);
        // a failed condition must not leave the variant behind either
        if (!updated) throw new ConditionFailed();
        return updated;
      })
      .catch((e: unknown) => {
        if (e instanceof ConditionFailed) return undefined;
        throw e;
      });
  }

  async projectConvertTo(project: string): Promise<string | null | undefined> {
    const row = await this.db.selectFrom('projects').select('convert_to').where('name', '=', project).executeTakeFirst();
    return row ? row.convert_to : undefined;
  }

  async setProjectConvertTo(project: string, target: string | null): Promise<boolean> {
    const r = await this.db.updateTable('projects').set({ convert_to: target }).where('name', '=', project).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async count(): Promise<number> {
    const r = await this.db
      .selectFrom('images')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async members(imageId: string): Promise<ImageMember[]> {
    const rows = await this.db.selectFrom('image_members').selectAll().where('image_id', '=', imageId).orderBy('project').execute();
    return rows.map(memberFromRow);
  }

  async addMember(imageId: string, project: string): Promise<ImageMember> {
    const now = Date.now();
    try {
      await this.db.insertInto('image_members').values({ image_id: imageId, project, status: 'pending', created_at: now, updated_at: now }).execute();
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
    }
    const row = await this.db.selectFrom('image_members').selectAll().where('image_id', '=', imageId).where('project', '=', project).executeTakeFirstOrThrow();
    return memberFromRow(row);
  }

  async setMemberStatus(imageId: string, project: string, status: MemberStatus): Promise<ImageMember | undefined> {
    const row = await this.db
      .updateTable('image_members')
      .set({ status, updated_at: Date.now() })
      .where('image_id', '=', imageId)
      .where('project', '=', project)
      .returningAll()
      .executeTakeFirst();
    return row ? memberFromRow(row) : undefined;
  }

  async removeMember(imageId: string, project: string): Promise<boolean> {
    const r = await this.db.deleteFrom('image_members').where('image_id', '=', imageId).where('project', '=', project).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}

class ConditionFailed extends Error {}

/** Inserts or replaces a variant, only while its image exists and is not being deleted. */
async function putVariantIn(trx: Transaction<Schema>, v: ImageVariant): Promise<boolean> {
  const img = await trx.selectFrom('images').select('state').where('id', '=', v.imageId).executeTakeFirst();
  if (!img || img.state === 'deleting') return false;
  await trx
    .insertInto('image_variants')
    .values({ image_id: v.imageId, format: v.format, options_key: v.optionsKey, digest: v.digest, size: v.sizeBytes, created_at: v.createdAt.getTime() })
    .onConflict((oc) =>
      oc.columns(['image_id', 'format', 'options_key']).doUpdateSet({ digest: v.digest, size: v.sizeBytes, created_at: v.createdAt.getTime() }),
    )
    .execute();
  return true;
}

function variantFromRow(r: ImageVariantsTable): ImageVariant {
  return {
    imageId: r.image_id,
    format: r.format,
    optionsKey: r.options_key,
    digest: r.digest,
    sizeBytes: Number(r.size),
    createdAt: new Date(Number(r.created_at)),
  };
}

/**
 * `sharedBytes` counts an image's bytes when another image holds the same digest — only another
 * image `viewer` may read: that figure must not reveal that some image the viewer cannot see has
 * the same bytes (a file-existence oracle across projects).
 */
async function usageIn(db: Db, project: string, exceptImage?: string, viewer?: AccessScope, asHolding?: Digest): Promise<ProjectUsage> {
  let q = db
    .selectFrom('images')
    .select((eb) => {
      let twin = eb
        .selectFrom('images as o')
        .select(sql<number>`1`.as('one'))
        .whereRef('o.digest', '=', 'images.digest')
        .whereRef('o.id', '<>', 'images.id')
        .where('o.state', '!=', 'deleting');
      if (viewer)
        twin = twin.where(
          'o.id',
          'in',
          eb
            .selectFrom('images')
            .select('images.id')
            .where(visibleTo(viewer, undefined, 'accepted', true)),
        );
      return [
        sql<number>`count(*)`.as('images'),
        sql<number>`coalesce(sum(case when digest is not null then stored_size else 0 end), 0)`.as('stored'),
        sql<number>`coalesce(sum(case when digest is not null then 1 else 0 end), 0)`.as('with_data'),
        sql<number>`coalesce(sum(case when state = 'importing' then reserved_bytes else 0 end), 0)`.as('staging'),
        sql<number>`coalesce(sum(case when state = 'importing' and ingest_kind = 'import' then 1 else 0 end), 0)`.as('imports'),
        sql<number>`coalesce(sum(case when digest is not null and ${eb.exists(twin)} then stored_size else 0 end), 0)`.as('shared'),
      ];
    })
    .where('project', '=', project)
    .where('state', '!=', 'deleting');
  if (exceptImage) q = q.where('id', '!=', exceptImage);
  const r = await q.executeTakeFirstOrThrow();
  // the project's OCI repositories draw on the same stored-bytes quota
  const oci = await ociProjectBytes(db, project, exceptImage, asHolding);
  return {
    images: Number(r.images),
    storedBytes: Number(r.stored) + oci,
    stagingBytes: Number(r.staging),
    imports: Number(r.imports),
    imagesWithData: Number(r.with_data),
    sharedBytes: Number(r.shared),
  };
}

async function updateIn(
  trx: Transaction<Schema>,
  id: string,
  patch: ImagePatch,
  cond: { fromStates?: readonly ImageState[]; expectedVersion?: number },
): Promise<Image | undefined> {
  {
    {
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
    }
  }
}

function memberFromRow(r: ImageMembersTable): ImageMember {
  return { imageId: r.image_id, project: r.project, status: r.status, createdAt: new Date(Number(r.created_at)), updatedAt: new Date(Number(r.updated_at)) };
}

const OWNER_USE = 0o400;
const GROUP_USE = 0o040;

/**
 * The SQL form of `rightsOn(...).has('use')` (src/domain/access/policy.ts) for listings; the matrix test
 * checks both agree. With `memberStatus`, only images offered to one of the caller's projects
 * with that status (the REST door's offers). `shared`: the member status that lists another project's
 * shared image (Glance's member_status, `all` for any). Community images of other projects are
 * listed only when asked for (`community`), as Glance lists them; `rightsOn` lets every signed-in
 * principal use them.
 */
function visibleTo(a: AccessScope, memberStatus: MemberStatus | undefined, shared: MemberStatus | 'all', community: boolean) {
  const mine = [...a.adminProjects, ...a.memberProjects];
  return ({ eb, or, and, exists, selectFrom }: ExpressionBuilder<Schema, 'images'>) => {
    const memberOf = (status: MemberStatus | 'all') => {
      let members = selectFrom('image_members')
        .select('image_members.project')
        .whereRef('image_members.image_id', '=', 'images.id')
        .where('image_members.project', 'in', mine.length ? mine : ['']);
      if (status !== 'all') members = members.where('image_members.status', '=', status);
      return exists(members);
    };
    if (memberStatus) return mine.length ? and([eb('visibility', '=', 'shared'), memberOf(memberStatus)]) : eb.val(false);
    if (a.anonymous) return eb('visibility', '=', 'public');
    const terms = [eb('visibility', '=', 'public')];
    if (community) terms.push(eb('visibility', '=', 'community'));
    if (a.adminProjects.length) terms.push(eb('project', 'in', a.adminProjects));
    if (a.memberProjects.length) {
      const isOwner = a.user === undefined ? eb.val(false) : eb('owner', '=', a.user);
      terms.push(
        and([
          eb('project', 'in', a.memberProjects),
          or([
            and([isOwner, eb(sql<number>`perms & ${OWNER_USE}`, '!=', 0)]),
            and([
              a.user === undefined ? eb.val(true) : or([eb('owner', 'is', null), eb('owner', '!=', a.user)]),
              eb(sql<number>`perms & ${GROUP_USE}`, '!=', 0),
            ]),
          ]),
        ]),
      );
      terms.push(and([eb('visibility', '=', 'shared'), memberOf(shared)]));
    } else if (a.adminProjects.length) {
      terms.push(and([eb('visibility', '=', 'shared'), memberOf(shared)]));
    }
    return or(terms);
  };
}

async function writeSide(db: Db, id: string, tags: string[], properties: Record<string, string>): Promise<void> {
  if (tags.length)
    await db
      .insertInto('image_tags')
      .values(tags.map((tag) => ({ image_id: id, tag })))
      .execute();
  const props = Object.entries(properties);
  if (props.length)
    await db
      .insertInto('image_properties')
      .values(props.map(([key, value]) => ({ image_id: id, key, value })))
      .execute();
}

// ---- cursor ------------------------------------------------------------------------------

/** The value SORT_COLUMN compares, computed from the record (absent: '' or -1, as the column's coalesce). */
function sortValue(img: Image, key: ImageSortKey): string | number {
  switch (key) {
    case 'name':
      return img.name ?? '';
    case 'createdAt':
      return img.createdAt.getTime();
    case 'updatedAt':
      return img.updatedAt.getTime();
    case 'storedSize':
      return img.storedSize ?? -1;
    case 'virtualSize':
      return img.virtualSize ?? -1;
    case 'state':
      return img.state;
    case 'diskFormat':
      return img.diskFormat ?? '';
    case 'containerFormat':
      return img.containerFormat ?? '';
    case 'id':
      return img.id;
  }
}

const sortName = (order: ImageSort[]) => order.map((o) => `${o.key}:${o.dir}`).join(',');

function encodeCursor(order: ImageSort[], v: (string | number)[], id: string): string {
  return Buffer.from(JSON.stringify({ k: sortName(order), v, id })).toString('base64url');
}

function decodeCursor(cursor: string, order: ImageSort[]): { v: (string | number)[]; id: string } {
  try {
    const c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { k: unknown; v: unknown; id: unknown };
    const ok =
      c.k === sortName(order) &&
      typeof c.id === 'string' &&
      Array.isArray(c.v) &&
      c.v.length === order.length &&
      order.every((o, i) => typeof (c.v as unknown[])[i] === (NUMERIC_SORT.has(o.key) ? 'number' : 'string'));
    if (ok) return { v: c.v as (string | number)[], id: c.id as string };
  } catch {
    // fall through
  }
  throw invalid('cursor is not one this list returned (or the sort changed); start again without a cursor');
}

// ---- rows ----------------------------------------------------------------------------------

/**
 * The row of a new image. Columns added after the first schema that hold their default are left
 * to it (`is_protected`, `hidden`), so a row written now also fits a schema migrated up to an
 * older version (the data migrations' tests write such rows).
 */
function toRow(img: Image): Insertable<ImagesTable> {
  return {
    id: img.id,
    // a nameless image (Glance's null name) is stored as '' (the column is NOT NULL since the first
    // schema; no name is '': names are 1 to 255 printable characters); fromRow reads it back as absent
    name: img.name ?? '',
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
    ...(img.protected ? { is_protected: 1 } : {}),
    ...(img.hidden ? { hidden: 1 } : {}),
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
    project: img.project ?? null,
    owner: img.owner ?? null,
    visibility: img.visibility,
    perms: img.perms,
    reserved_bytes: img.reservedBytes,
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
  project: 'project',
  owner: 'owner',
  visibility: 'visibility',
  perms: 'perms',
  reservedBytes: 'reserved_bytes',
};

function toPatchRow(p: ImagePatch): Updateable<ImagesTable> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (v === undefined) continue;
    const col = PATCH_COLUMNS[k];
    if (col) out[col] = v;
  }
  if (p.name === null) out.name = '';
  if (p.persistent !== undefined) out.persistent = p.persistent ? 1 : 0;
  if (p.protected !== undefined) out.is_protected = p.protected ? 1 : 0;
  if (p.hidden !== undefined) out.hidden = p.hidden ? 1 : 0;
  if (p.properties !== undefined) out.properties = JSON.stringify(p.properties ?? {});
  if (p.tags !== undefined) out.tags = JSON.stringify(p.tags ?? []);
  if (p.checksums !== undefined) {
    out.checksum_md5 = p.checksums?.md5 ?? null;
    out.checksum_sha512 = p.checksums?.sha512 ?? null;
  }
  if (p.inspection !== undefined) out.inspection = p.inspection === null ? null : JSON.stringify(p.inspection);
  return out as Updateable<ImagesTable>;
}

function fromRow(r: Selectable<ImagesTable>): Image {
  const img: Image = {
    id: r.id,
    type: r.type,
    minDisk: Number(r.min_disk),
    minRam: Number(r.min_ram),
    persistent: Number(r.persistent) === 1,
    properties: JSON.parse(r.properties) as Record<string, string>,
    tags: JSON.parse(r.tags) as string[],
    state: r.state,
    usedBy: Number(r.used_by),
    checksums: {},
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
    version: Number(r.version),
    visibility: r.visibility,
    perms: Number(r.perms),
    reservedBytes: Number(r.reserved_bytes),
  };
  if (r.name !== '') img.name = r.name;
  if (Number(r.is_protected) === 1) img.protected = true;
  if (Number(r.hidden) === 1) img.hidden = true;
  if (r.project !== null) img.project = r.project;
  if (r.owner !== null) img.owner = r.owner;
  if (r.description !== null) img.description = r.description;
  if (r.disk_format !== null) img.diskFormat = r.disk_format;
  if (r.container_format !== null) img.containerFormat = r.container_format;
  if (r.architecture !== null) img.architecture = r.architecture;
  if (r.os_distro !== null) img.osDistro = r.os_distro;
  if (r.os_version !== null) img.osVersion = r.os_version;
  if (r.os_type !== null) img.osType = r.os_type;
  if (r.state_reason !== null) img.stateReason = r.state_reason;
  if (r.progress !== null) img.progress = Number(r.progress);
  if (r.ingest_kind !== null) img.ingestKind = r.ingest_kind;
  if (r.ingest_id !== null) img.ingestId = r.ingest_id;
  if (r.lock_reason !== null) img.lockReason = r.lock_reason;
  if (r.digest !== null) img.digest = r.digest;
  if (r.stored_size !== null) img.storedSize = Number(r.stored_size);
  if (r.virtual_size !== null) img.virtualSize = Number(r.virtual_size);
  if (r.checksum_md5 !== null) img.checksums.md5 = r.checksum_md5;
  if (r.checksum_sha512 !== null) img.checksums.sha512 = r.checksum_sha512;
  if (r.inspection !== null) img.inspection = JSON.parse(r.inspection) as Image['inspection'];
  return img;
}
