/**
 * The OCI registry's tables (0007-oci-registry) behind the domain's `RegistryRepository` port, for
 * SQLite and PostgreSQL alike.
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import { isUniqueViolation, type Database } from './database.js';
import type { OciManifestsTable, Schema } from './schema.js';
import type { Digest } from '../store/blob-store.js';
import type { ManifestRecord, QuotaChange, RegistryRepository, RegistryWrites, UploadChunk, UploadRecord } from '../domain/registry/registry-repository.js';

type Db = Kysely<Schema> | Transaction<Schema>;

/**
 * The project's quota lock as the image repository takes it for the REST ingest
 * (`KyselyImageRepository.withProjectLock`): `fn` runs in the transaction holding it, with the
 * project's stored-bytes limit and a reading of its usage (stored + staging bytes) in that transaction.
 */
export type ProjectLock = <T>(project: string, fn: (trx: Transaction<Schema>, q: { limit?: number; used(): Promise<number> }) => Promise<T>) => Promise<T>;

export class KyselyRegistryRepository implements RegistryRepository {
  private readonly db: Db;

  /** `db` is a transaction for the writes `underQuota` hands out. */
  constructor(
    database: Database | { kysely: Db },
    private readonly lock?: ProjectLock,
  ) {
    this.db = database.kysely;
  }

  async underQuota<T>(project: string, write: (w: RegistryWrites) => Promise<T>, check: (q: QuotaChange) => void): Promise<T> {
    if (!this.lock) throw new Error('KyselyRegistryRepository was built without the project lock');
    return this.lock(project, async (trx, q) => {
      const out = async () => write(new KyselyRegistryRepository({ kysely: trx }));
      // no stored-bytes limit: nothing to measure (the usage query is the costly part)
      if (q.limit === undefined) return out();
      const before = await q.used();
      const result = await out();
      // throwing here rolls the write back: nothing over the quota is ever committed
      check({ limit: q.limit, before, after: await q.used() });
      return result;
    });
  }

  async ensureRepository(name: string, project: string): Promise<void> {
    try {
      await this.db
        .insertInto('oci_repositories')
        .values({ name, project, created_at: Date.now() })
        .onConflict((oc) => oc.column('name').doNothing())
        .execute();
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
    }
  }

  async repositoryExists(name: string): Promise<boolean> {
    return (await this.db.selectFrom('oci_repositories').select('name').where('name', '=', name).executeTakeFirst()) !== undefined;
  }

  async repositories(opts: { projects?: readonly string[]; last?: string; limit: number }): Promise<string[]> {
    if (opts.projects && opts.projects.length === 0) return [];
    let q = this.db.selectFrom('oci_repositories').select('name');
    if (opts.projects) q = q.where('project', 'in', [...opts.projects]);
    // names are lower-case ASCII (the distribution grammar): every collation orders them by bytes
    if (opts.last !== undefined) q = q.where('name', '>', opts.last);
    const rows = await q.orderBy('name').limit(opts.limit).execute();
    return rows.map((r) => r.name);
  }

  async linkedBlob(repository: string, digest: Digest): Promise<number | undefined> {
    const r = await this.db.selectFrom('oci_blobs').select('size').where('repository', '=', repository).where('digest', '=', digest).executeTakeFirst();
    return r === undefined ? undefined : Number(r.size);
  }

  async linkBlob(repository: string, digest: Digest, sizeBytes: number): Promise<void> {
    await this.db
      .insertInto('oci_blobs')
      .values({ repository, digest, size: sizeBytes, created_at: Date.now() })
      .onConflict((oc) => oc.columns(['repository', 'digest']).doUpdateSet({ created_at: Date.now() }))
      .execute();
  }

  async unlinkBlob(repository: string, digest: Digest): Promise<boolean> {
    const r = await this.db.deleteFrom('oci_blobs').where('repository', '=', repository).where('digest', '=', digest).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async manifest(repository: string, digest: Digest): Promise<ManifestRecord | undefined> {
    const r = await this.db.selectFrom('oci_manifests').selectAll().where('repository', '=', repository).where('digest', '=', digest).executeTakeFirst();
    return r && manifestFromRow(r);
  }

  async tagged(repository: string, tag: string): Promise<ManifestRecord | undefined> {
    const r = await this.db
      .selectFrom('oci_tags as t')
      .innerJoin('oci_manifests as m', (j) => j.onRef('m.repository', '=', 't.repository').onRef('m.digest', '=', 't.digest'))
      .selectAll('m')
      .where('t.repository', '=', repository)
      .where('t.tag', '=', tag)
      .executeTakeFirst();
    return r && manifestFromRow(r);
  }

  async putManifest(m: ManifestRecord, children: readonly Digest[], tag?: string): Promise<void> {
    await inTx(this.db, async (trx) => {
      const exists = await trx
        .selectFrom('oci_manifests')
        .select('digest')
        .where('repository', '=', m.repository)
        .where('digest', '=', m.digest)
        .executeTakeFirst();
      if (!exists) {
        await trx
          .insertInto('oci_manifests')
          .values({
            repository: m.repository,
            digest: m.digest,
            media_type: m.mediaType,
            artifact_type: m.artifactType ?? null,
            subject: m.subject ?? null,
            size: m.sizeBytes,
            depth: m.depth,
            annotations: m.annotations ? JSON.stringify(m.annotations) : null,
            created_at: m.createdAt.getTime(),
          })
          .execute();
        const unique = [...new Set(children)];
        for (let i = 0; i < unique.length; i += 200) {
          await trx
            .insertInto('oci_manifest_refs')
            .values(unique.slice(i, i + 200).map((child) => ({ repository: m.repository, manifest: m.digest, child })))
            .execute();
        }
      }
      if (tag !== undefined) {
        await trx
          .insertInto('oci_tags')
          .values({ repository: m.repository, tag, digest: m.digest, updated_at: m.createdAt.getTime() })
          .onConflict((oc) => oc.columns(['repository', 'tag']).doUpdateSet({ digest: m.digest, updated_at: m.createdAt.getTime() }))
          .execute();
      }
    });
  }

  async deleteManifest(repository: string, digest: Digest): Promise<boolean | { listedBy: Digest[] }> {
    return inTx(this.db, async (trx) => {
      // in the transaction that deletes: an index put meanwhile either sees the child gone or lists it here
      const parents = await trx
        .selectFrom('oci_manifest_refs')
        .select('manifest')
        .where('repository', '=', repository)
        .where('child', '=', digest)
        .where('manifest', '<>', digest)
        .orderBy('manifest')
        .limit(10)
        .execute();
      if (parents.length > 0) {
        const exists = await trx
          .selectFrom('oci_manifests')
          .select('digest')
          .where('repository', '=', repository)
          .where('digest', '=', digest)
          .executeTakeFirst();
        if (exists) return { listedBy: parents.map((p) => p.manifest) };
      }
      await trx.deleteFrom('oci_tags').where('repository', '=', repository).where('digest', '=', digest).execute();
      await trx.deleteFrom('oci_manifest_refs').where('repository', '=', repository).where('manifest', '=', digest).execute();
      const r = await trx.deleteFrom('oci_manifests').where('repository', '=', repository).where('digest', '=', digest).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async deleteTag(repository: string, tag: string): Promise<boolean> {
    const r = await this.db.deleteFrom('oci_tags').where('repository', '=', repository).where('tag', '=', tag).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async tags(repository: string): Promise<string[]> {
    const rows = await this.db.selectFrom('oci_tags').select('tag').where('repository', '=', repository).execute();
    return rows.map((r) => r.tag);
  }

  async referrers(repository: string, digest: Digest): Promise<ManifestRecord[]> {
    const rows = await this.db
      .selectFrom('oci_manifests')
      .selectAll()
      .where('repository', '=', repository)
      .where('subject', '=', digest)
      .orderBy('created_at')
      .execute();
    return rows.map(manifestFromRow);
  }

  async createUpload(u: UploadRecord): Promise<void> {
    await this.db
      .insertInto('oci_uploads')
      .values({ id: u.id, repository: u.repository, size: u.sizeBytes, started_at: u.startedAt.getTime(), updated_at: u.updatedAt.getTime() })
      .execute();
  }

  async upload(id: string): Promise<UploadRecord | undefined> {
    const r = await this.db.selectFrom('oci_uploads').selectAll().where('id', '=', id).executeTakeFirst();
    return (
      r && {
        id: r.id,
        repository: r.repository,
        sizeBytes: Number(r.size),
        startedAt: new Date(Number(r.started_at)),
        updatedAt: new Date(Number(r.updated_at)),
      }
    );
  }

  async uploadChunks(id: string): Promise<UploadChunk[]> {
    const rows = await this.db.selectFrom('oci_upload_chunks').selectAll().where('upload_id', '=', id).orderBy('offset').execute();
    return rows.map((r) => ({ offset: Number(r.offset), digest: r.digest, sizeBytes: Number(r.size) }));
  }

  async appendChunk(id: string, chunk: UploadChunk, now: Date): Promise<boolean> {
    try {
      return await inTx(this.db, async (trx) => {
        // compare-and-set on the session's size: of two chunks sent for one offset, one wins
        const r = await trx
          .updateTable('oci_uploads')
          .set({ size: chunk.offset + chunk.sizeBytes, updated_at: now.getTime() })
          .where('id', '=', id)
          .where('size', '=', chunk.offset)
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) !== 1) return false;
        await trx.insertInto('oci_upload_chunks').values({ upload_id: id, offset: chunk.offset, digest: chunk.digest, size: chunk.sizeBytes }).execute();
        return true;
      });
    } catch (e) {
      if (isUniqueViolation(e)) return false;
      throw e;
    }
  }

  async deleteUpload(id: string): Promise<boolean> {
    return inTx(this.db, async (trx) => {
      await trx.deleteFrom('oci_upload_chunks').where('upload_id', '=', id).execute();
      const r = await trx.deleteFrom('oci_uploads').where('id', '=', id).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async expireUploads(before: Date): Promise<number> {
    return inTx(this.db, async (trx) => {
      const old = trx.selectFrom('oci_uploads').select('id').where('updated_at', '<', before.getTime());
      await trx.deleteFrom('oci_upload_chunks').where('upload_id', 'in', old).execute();
      const r = await trx.deleteFrom('oci_uploads').where('updated_at', '<', before.getTime()).executeTakeFirst();
      return Number(r.numDeletedRows);
    });
  }

  async referencedDigests(liveSince: Date): Promise<Set<Digest>> {
    const out = new Set<Digest>();
    for (const r of await this.db.selectFrom('oci_blobs').select('digest').distinct().execute()) out.add(r.digest);
    for (const r of await this.db.selectFrom('oci_manifests').select('digest').distinct().execute()) out.add(r.digest);
    for (const r of await this.db.selectFrom('oci_manifest_refs').select('child').distinct().execute()) out.add(r.child);
    const live = this.db.selectFrom('oci_uploads').select('id').where('updated_at', '>=', liveSince.getTime());
    for (const r of await this.db.selectFrom('oci_upload_chunks').select('digest').distinct().where('upload_id', 'in', live).execute()) out.add(r.digest);
    return out;
  }

  async generatedLayer(diskDigest: Digest, fileName: string): Promise<Digest | undefined> {
    const r = await this.db
      .selectFrom('oci_generated_layers')
      .select('layer_digest')
      .where('disk_digest', '=', diskDigest)
      .where('file_name', '=', fileName)
      .executeTakeFirst();
    return r?.layer_digest;
  }

  async recordGeneratedLayer(diskDigest: Digest, fileName: string, layerDigest: Digest): Promise<void> {
    await this.db
      .insertInto('oci_generated_layers')
      .values({ disk_digest: diskDigest, file_name: fileName, layer_digest: layerDigest, created_at: Date.now() })
      .onConflict((oc) => oc.columns(['disk_digest', 'file_name']).doNothing())
      .execute();
  }

  async forgetGeneratedLayers(diskDigests: Digest[]): Promise<void> {
    // in slices: a statement's bound parameters are limited (SQLite 32766, PostgreSQL 65535)
    for (let i = 0; i < diskDigests.length; i += 500) {
      await this.db
        .deleteFrom('oci_generated_layers')
        .where('disk_digest', 'in', diskDigests.slice(i, i + 500))
        .execute();
    }
  }

  projectBytes(project: string): Promise<number> {
    return ociProjectBytes(this.db, project);
  }
}

/**
 * The bytes a project's repositories hold, counted by distinct stored blob: a blob or manifest
 * linked to several of the project's repositories counts once, and one that is also the blob of
 * an image of the project (not being deleted; `exceptImage` aside) counts not at all — the image
 * counts it, in full, as the REST API counts every image. So an oras push, whose layer blob becomes
 * the image's blob, counts its bytes once (a containerDisk's compressed layer and its unpacked disk
 * are two stored blobs and count both). `asHolding`: the figure as if the image being ingested held
 * that blob already (what its commit will make true). Open uploads count what they received. The image quota
 * (db/image-repository.ts) adds it to the project's stored bytes, so both doors draw on one quota.
 */
export async function ociProjectBytes(db: Db, project: string, exceptImage?: string, asHolding?: Digest): Promise<number> {
  const except = exceptImage === undefined ? sql`` : sql`and i.id <> ${exceptImage}`;
  const held = asHolding === undefined ? sql`` : sql`and d.digest <> ${asHolding}`;
  const stored = await sql<{ n: number | string }>`
    select coalesce(sum(d.size), 0) as n from (
      select u.digest, max(u.size) as size from (
        select b.digest, b.size from oci_blobs b join oci_repositories r on r.name = b.repository where r.project = ${project}
        union all
        select m.digest, m.size from oci_manifests m join oci_repositories r on r.name = m.repository where r.project = ${project}
      ) u group by u.digest
    ) d
    where not exists (select 1 from images i where i.project = ${project} and i.digest = d.digest and i.state <> 'deleting' ${except}) ${held}`.execute(db);
  const repos = db.selectFrom('oci_repositories').select('name').where('project', '=', project);
  const uploads = await db
    .selectFrom('oci_uploads')
    .select(sql<number>`coalesce(sum(size), 0)`.as('n'))
    .where('repository', 'in', repos)
    .executeTakeFirstOrThrow();
  return Number(stored.rows[0]?.n ?? 0) + Number(uploads.n);
}

/** `fn` in a transaction: `db`'s own when it is one (the writes of `underQuota`), else a new one. */
function inTx<T>(db: Db, fn: (trx: Db) => Promise<T>): Promise<T> {
  return db.isTransaction ? fn(db) : (db as Kysely<Schema>).transaction().execute(fn);
}

function manifestFromRow(r: OciManifestsTable): ManifestRecord {
  const m: ManifestRecord = {
    repository: r.repository,
    digest: r.digest,
    mediaType: r.media_type,
    sizeBytes: Number(r.size),
    depth: Number(r.depth),
    createdAt: new Date(Number(r.created_at)),
  };
  if (r.artifact_type !== null) m.artifactType = r.artifact_type;
  if (r.subject !== null) m.subject = r.subject;
  if (r.annotations !== null) m.annotations = JSON.parse(r.annotations) as Record<string, string>;
  return m;
}
