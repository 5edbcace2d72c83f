/**
 * Schema migrations, in code (they run the same from dist/ and under tsx), applied at start-up
 * by Kysely's Migrator; applying them twice is a no-op.
 */
import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import type { Database } from './database.js';

const migrations: Record<string, Migration> = {
  '0001-catalog': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('images')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('name', 'varchar(255)', (c) => c.notNull())
        .addColumn('description', 'text')
        .addColumn('type', 'varchar(16)', (c) => c.notNull())
        .addColumn('disk_format', 'varchar(16)')
        .addColumn('container_format', 'varchar(16)')
        .addColumn('architecture', 'varchar(64)')
        .addColumn('os_distro', 'varchar(64)')
        .addColumn('os_version', 'varchar(64)')
        .addColumn('os_type', 'varchar(64)')
        .addColumn('min_disk', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('min_ram', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('persistent', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('properties', 'text', (c) => c.notNull().defaultTo('{}'))
        .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('state', 'varchar(16)', (c) => c.notNull())
        .addColumn('state_reason', 'text')
        .addColumn('progress', 'integer')
        .addColumn('ingest_kind', 'varchar(16)')
        .addColumn('ingest_id', 'varchar(64)')
        .addColumn('lock_reason', 'varchar(16)')
        .addColumn('used_by', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('digest', 'varchar(80)')
        .addColumn('stored_size', 'bigint')
        .addColumn('virtual_size', 'bigint')
        .addColumn('checksum_md5', 'varchar(32)')
        .addColumn('checksum_sha512', 'varchar(128)')
        .addColumn('inspection', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .execute();
      for (const [name, cols] of [
        ['images_created', ['created_at', 'id']],
        ['images_updated', ['updated_at', 'id']],
        ['images_name', ['name', 'id']],
        ['images_stored', ['stored_size', 'id']],
        ['images_virtual', ['virtual_size', 'id']],
        ['images_state', ['state']],
        ['images_digest', ['digest']],
        ['images_type', ['type']],
      ] as const) {
        await db.schema.createIndex(name).on('images').columns([...cols]).execute();
      }
      await db.schema
        .createTable('image_tags')
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull().references('images.id').onDelete('cascade'))
        .addColumn('tag', 'varchar(255)', (c) => c.notNull())
        .addPrimaryKeyConstraint('image_tags_pk', ['image_id', 'tag'])
        .execute();
      await db.schema.createIndex('image_tags_tag').on('image_tags').columns(['tag', 'image_id']).execute();
      await db.schema
        .createTable('image_properties')
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull().references('images.id').onDelete('cascade'))
        .addColumn('key', 'varchar(255)', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('image_properties_pk', ['image_id', 'key'])
        .execute();
      await db.schema.createIndex('image_properties_kv').on('image_properties').columns(['key', 'value']).execute();
      await db.schema
        .createTable('idempotency_keys')
        .addColumn('key', 'varchar(255)', (c) => c.primaryKey())
        .addColumn('request_hash', 'varchar(64)', (c) => c.notNull())
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('jobs')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('kind', 'varchar(32)', (c) => c.notNull())
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('state', 'varchar(16)', (c) => c.notNull())
        .addColumn('payload', 'text', (c) => c.notNull())
        .addColumn('progress', 'integer')
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('error', 'text')
        .addColumn('lease_owner', 'varchar(64)')
        .addColumn('lease_until', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('jobs_state').on('jobs').columns(['state', 'kind', 'created_at']).execute();
    },
  },
  '0002-list-index': {
    // the common console/CLI list: filter by state and type, newest first (bench/list: SQLite
    // scanned 100,000 rows without it)
    async up(db: Kysely<any>) {
      await db.schema.createIndex('images_state_type_created').on('images').columns(['state', 'type', 'created_at', 'id']).execute();
    },
  },
};

class InCodeProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

export async function migrateToLatest(db: Database): Promise<void> {
  const migrator = new Migrator({ db: db.kysely, provider: new InCodeProvider(), migrationTableName: 'imago_migrations', migrationLockTableName: 'imago_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? String(error)}`);
  }
}
