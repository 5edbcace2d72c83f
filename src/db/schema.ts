/** The catalog's tables as Kysely sees them (both dialects). Sizes are numbers (exact to 2^53). */
import type { ColumnType, Generated } from 'kysely';

export interface ImagesTable {
  id: string;
  name: string;
  description: string | null;
  type: string;
  disk_format: string | null;
  container_format: string | null;
  architecture: string | null;
  os_distro: string | null;
  os_version: string | null;
  os_type: string | null;
  min_disk: number;
  min_ram: number;
  persistent: number;
  properties: string;
  tags: string;
  state: string;
  state_reason: string | null;
  progress: number | null;
  ingest_kind: string | null;
  ingest_id: string | null;
  lock_reason: string | null;
  used_by: number;
  digest: string | null;
  stored_size: number | null;
  virtual_size: number | null;
  checksum_md5: string | null;
  checksum_sha512: string | null;
  inspection: string | null;
  /** milliseconds since the epoch: the same exact integer in both dialects, and keyset-friendly */
  created_at: number;
  updated_at: number;
  version: number;
}

export interface ImageTagsTable {
  image_id: string;
  tag: string;
}

export interface ImagePropertiesTable {
  image_id: string;
  key: string;
  value: string;
}

export interface IdempotencyKeysTable {
  key: string;
  request_hash: string;
  image_id: string;
  created_at: number;
}

export interface JobsTable {
  id: string;
  kind: string;
  image_id: string;
  state: string;
  payload: string;
  progress: number | null;
  attempts: number;
  error: string | null;
  lease_owner: string | null;
  lease_until: number | null;
  created_at: number;
  updated_at: number;
}

export interface MigrationRow {
  name: string;
  applied_at: ColumnType<number, number, never>;
  seq: Generated<number>;
}

export interface Schema {
  images: ImagesTable;
  image_tags: ImageTagsTable;
  image_properties: ImagePropertiesTable;
  idempotency_keys: IdempotencyKeysTable;
  jobs: JobsTable;
}
