/**
 * Resumable uploads and upload grants (0012-tus-uploads) behind the domain's
 * `ResumableUploadRepository` and `UploadGrantRepository` ports, for SQLite and PostgreSQL alike.
 */
import type { Kysely, Selectable } from 'kysely';
import type { Database } from './database.js';
import type { ResumableUploadsTable, Schema } from './schema.js';
import type { ResumableUpload, ResumableUploadRepository } from '../domain/images/resumable-uploads.js';
import type { UploadGrant, UploadGrantRepository } from '../domain/access/upload-grants.js';

export class KyselyUploadRepository implements ResumableUploadRepository, UploadGrantRepository {
  private readonly db: Kysely<Schema>;

  constructor(database: Database) {
    this.db = database.kysely;
  }

  async createResumable(u: ResumableUpload): Promise<void> {
    await this.db
      .insertInto('resumable_uploads')
      .values({
        id: u.id,
        image_id: u.imageId,
        size: u.sizeBytes,
        metadata: JSON.stringify(u.metadata),
        created_by: u.createdBy.slice(0, 255),
        created_at: u.createdAt.getTime(),
        expires_at: u.expiresAt.getTime(),
      })
      .execute();
  }

  async resumable(id: string): Promise<ResumableUpload | undefined> {
    const r = await this.db.selectFrom('resumable_uploads').selectAll().where('id', '=', id).executeTakeFirst();
    return r && fromRow(r);
  }

  async deleteResumable(id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('resumable_uploads').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async resumables(opts: { expiredBefore?: Date; imageId?: string } = {}): Promise<ResumableUpload[]> {
    let q = this.db.selectFrom('resumable_uploads').selectAll();
    if (opts.expiredBefore) q = q.where('expires_at', '<', opts.expiredBefore.getTime());
    if (opts.imageId !== undefined) q = q.where('image_id', '=', opts.imageId);
    return (await q.orderBy('created_at').execute()).map(fromRow);
  }

  async createGrant(g: UploadGrant & { secretHash: string }): Promise<void> {
    await this.db
      .insertInto('upload_grants')
      .values({
        id: g.id,
        secret_hash: g.secretHash,
        image_id: g.imageId,
        created_by: g.createdBy.slice(0, 255),
        created_at: g.createdAt.getTime(),
        expires_at: g.expiresAt.getTime(),
      })
      .execute();
  }

  async grant(id: string): Promise<(UploadGrant & { secretHash: string }) | undefined> {
    const r = await this.db.selectFrom('upload_grants').selectAll().where('id', '=', id).executeTakeFirst();
    return (
      r && {
        id: r.id,
        imageId: r.image_id,
        createdBy: r.created_by,
        createdAt: new Date(Number(r.created_at)),
        expiresAt: new Date(Number(r.expires_at)),
        secretHash: r.secret_hash,
      }
    );
  }

  async deleteGrantsBefore(before: Date): Promise<number> {
    const r = await this.db.deleteFrom('upload_grants').where('expires_at', '<', before.getTime()).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

function fromRow(r: Selectable<ResumableUploadsTable>): ResumableUpload {
  return {
    id: r.id,
    imageId: r.image_id,
    sizeBytes: Number(r.size),
    metadata: JSON.parse(r.metadata) as Record<string, string | null>,
    createdBy: r.created_by,
    createdAt: new Date(Number(r.created_at)),
    expiresAt: new Date(Number(r.expires_at)),
  };
}
