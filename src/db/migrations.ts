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
        await db.schema
          .createIndex(name)
          .on('images')
          .columns([...cols])
          .execute();
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
  '0003-access': {
    // multi-tenant access (issue 4): principals, tokens, sharing, quotas, audit. Images that
    // existed before get no project: cluster scope, readable by every authenticated principal.
    async up(db: Kysely<any>) {
      await db.schema.alterTable('images').addColumn('project', 'varchar(64)').execute();
      await db.schema.alterTable('images').addColumn('owner', 'varchar(255)').execute();
      await db.schema
        .alterTable('images')
        .addColumn('visibility', 'varchar(16)', (c) => c.notNull().defaultTo('project'))
        .execute();
      await db.schema
        .alterTable('images')
        .addColumn('perms', 'integer', (c) => c.notNull().defaultTo(0o660))
        .execute();
      await db.schema
        .alterTable('images')
        .addColumn('reserved_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex('images_project').on('images').columns(['project', 'created_at', 'id']).execute();
      await db.schema
        .createTable('projects')
        .addColumn('name', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('description', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('max_images', 'bigint')
        .addColumn('max_stored_bytes', 'bigint')
        .addColumn('max_staging_bytes', 'bigint')
        .addColumn('max_imports', 'bigint')
        .execute();
      await db.schema
        .createTable('users')
        .addColumn('name', 'varchar(255)', (c) => c.primaryKey())
        .addColumn('server_admin', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('groups')
        .addColumn('name', 'varchar(255)', (c) => c.primaryKey())
        .addColumn('description', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('group_members')
        .addColumn('group_name', 'varchar(255)', (c) => c.notNull().references('groups.name').onDelete('cascade'))
        .addColumn('user_name', 'varchar(255)', (c) => c.notNull())
        .addPrimaryKeyConstraint('group_members_pk', ['group_name', 'user_name'])
        .execute();
      await db.schema
        .createTable('project_roles')
        .addColumn('project', 'varchar(64)', (c) => c.notNull().references('projects.name').onDelete('cascade'))
        .addColumn('subject_kind', 'varchar(8)', (c) => c.notNull())
        .addColumn('subject', 'varchar(255)', (c) => c.notNull())
        .addColumn('role', 'varchar(16)', (c) => c.notNull())
        .addPrimaryKeyConstraint('project_roles_pk', ['project', 'subject_kind', 'subject'])
        .execute();
      await db.schema.createIndex('project_roles_subject').on('project_roles').columns(['subject_kind', 'subject']).execute();
      await db.schema
        .createTable('tokens')
        .addColumn('id', 'varchar(32)', (c) => c.primaryKey())
        .addColumn('name', 'varchar(255)', (c) => c.notNull())
        .addColumn('user_name', 'varchar(255)', (c) => c.notNull())
        .addColumn('project', 'varchar(64)')
        .addColumn('role', 'varchar(16)', (c) => c.notNull())
        .addColumn('secret_hash', 'varchar(64)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('created_by', 'varchar(255)', (c) => c.notNull())
        .addColumn('expires_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .addColumn('last_used_at', 'bigint')
        .execute();
      await db.schema
        .createTable('image_members')
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull().references('images.id').onDelete('cascade'))
        .addColumn('project', 'varchar(64)', (c) => c.notNull())
        .addColumn('status', 'varchar(16)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('image_members_pk', ['image_id', 'project'])
        .execute();
      await db.schema.createIndex('image_members_project').on('image_members').columns(['project', 'status', 'image_id']).execute();
      await db.schema
        .createTable('oidc_issuers')
        .addColumn('issuer', 'varchar(1024)', (c) => c.primaryKey())
        .addColumn('audience', 'varchar(1024)', (c) => c.notNull())
        .addColumn('jwks_url', 'varchar(2048)')
        .addColumn('username_claim', 'varchar(255)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('claim_rules')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('issuer', 'varchar(1024)')
        .addColumn('claim', 'varchar(255)', (c) => c.notNull())
        .addColumn('value', 'varchar(2048)', (c) => c.notNull())
        .addColumn('project', 'varchar(64)')
        .addColumn('role', 'varchar(16)')
        .addColumn('group_name', 'varchar(255)')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('audit_log')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('actor', 'varchar(512)', (c) => c.notNull())
        .addColumn('action', 'varchar(64)', (c) => c.notNull())
        .addColumn('target', 'varchar(1024)')
        .addColumn('project', 'varchar(64)')
        .addColumn('remote', 'varchar(64)')
        .addColumn('result', 'varchar(64)', (c) => c.notNull())
        .addColumn('detail', 'text')
        .execute();
      await db.schema.createIndex('audit_at').on('audit_log').columns(['at', 'id']).execute();
    },
  },
  '0004-variants': {
    // conversion in the service (issue 5): converted forms of an image kept as content-addressed
    // blobs, and the per-project convert-on-import target (null = the server's setting)
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('image_variants')
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull().references('images.id').onDelete('cascade'))
        .addColumn('format', 'varchar(16)', (c) => c.notNull())
        .addColumn('options_key', 'varchar(255)', (c) => c.notNull())
        .addColumn('digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('image_variants_pk', ['image_id', 'format', 'options_key'])
        .execute();
      await db.schema.createIndex('image_variants_digest').on('image_variants').columns(['digest']).execute();
      await db.schema.alterTable('projects').addColumn('convert_to', 'varchar(16)').execute();
    },
  },
  '0005-cluster-scope': {
    // issue 18: an image without a project is visible to server admins only (unless public); the
    // records say so instead of the `project`/660 they were created with
    async up(db: Kysely<any>) {
      await db.updateTable('images').set({ visibility: 'private', perms: 0o600 }).where('project', 'is', null).where('visibility', '!=', 'public').execute();
      await db.updateTable('images').set({ perms: 0o604 }).where('project', 'is', null).where('visibility', '=', 'public').execute();
    },
  },
  '0006-job-queue': {
    // issue 19: one job queue for every kind. A job's phase is its own column (a restarted worker
    // starts there); claims look for queued jobs and running ones whose lease has expired.
    async up(db: Kysely<any>) {
      await db.schema
        .alterTable('jobs')
        .addColumn('phase', 'varchar(32)', (c) => c.notNull().defaultTo(''))
        .execute();
      await db.schema.createIndex('jobs_claim').on('jobs').columns(['state', 'lease_until', 'created_at']).execute();
    },
  },
  '0007-oci-registry': {
    // issue 10: the OCI door. Repositories live in projects; blobs are the content-addressed blobs
    // of the one store, linked to the repositories that pushed or mounted them; manifests are
    // blobs too, with the facts listing and GC need; upload sessions are rows whose received
    // chunks are committed blobs, so a session survives a restart.
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('oci_repositories')
        .addColumn('name', 'varchar(255)', (c) => c.primaryKey())
        .addColumn('project', 'varchar(64)', (c) => c.notNull().references('projects.name').onDelete('cascade'))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('oci_repositories_project').on('oci_repositories').columns(['project', 'name']).execute();
      await db.schema
        .createTable('oci_blobs')
        .addColumn('repository', 'varchar(255)', (c) => c.notNull().references('oci_repositories.name').onDelete('cascade'))
        .addColumn('digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('oci_blobs_pk', ['repository', 'digest'])
        .execute();
      await db.schema.createIndex('oci_blobs_digest').on('oci_blobs').columns(['digest']).execute();
      await db.schema
        .createTable('oci_manifests')
        .addColumn('repository', 'varchar(255)', (c) => c.notNull().references('oci_repositories.name').onDelete('cascade'))
        .addColumn('digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('media_type', 'varchar(255)', (c) => c.notNull())
        .addColumn('artifact_type', 'varchar(255)')
        .addColumn('subject', 'varchar(80)')
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('depth', 'integer', (c) => c.notNull())
        .addColumn('annotations', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('oci_manifests_pk', ['repository', 'digest'])
        .execute();
      await db.schema.createIndex('oci_manifests_subject').on('oci_manifests').columns(['repository', 'subject']).execute();
      await db.schema.createIndex('oci_manifests_digest').on('oci_manifests').columns(['digest']).execute();
      await db.schema
        .createTable('oci_manifest_refs')
        .addColumn('repository', 'varchar(255)', (c) => c.notNull())
        .addColumn('manifest', 'varchar(80)', (c) => c.notNull())
        .addColumn('child', 'varchar(80)', (c) => c.notNull())
        .addPrimaryKeyConstraint('oci_manifest_refs_pk', ['repository', 'manifest', 'child'])
        .addForeignKeyConstraint('oci_manifest_refs_manifest', ['repository', 'manifest'], 'oci_manifests', ['repository', 'digest'], (c) =>
          c.onDelete('cascade'),
        )
        .execute();
      await db.schema.createIndex('oci_manifest_refs_child').on('oci_manifest_refs').columns(['child']).execute();
      await db.schema
        .createTable('oci_tags')
        .addColumn('repository', 'varchar(255)', (c) => c.notNull())
        .addColumn('tag', 'varchar(128)', (c) => c.notNull())
        .addColumn('digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('oci_tags_pk', ['repository', 'tag'])
        .addForeignKeyConstraint('oci_tags_manifest', ['repository', 'digest'], 'oci_manifests', ['repository', 'digest'], (c) => c.onDelete('cascade'))
        .execute();
      await db.schema
        .createTable('oci_uploads')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('repository', 'varchar(255)', (c) => c.notNull().references('oci_repositories.name').onDelete('cascade'))
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('oci_uploads_updated').on('oci_uploads').columns(['updated_at']).execute();
      await db.schema
        .createTable('oci_upload_chunks')
        .addColumn('upload_id', 'varchar(64)', (c) => c.notNull().references('oci_uploads.id').onDelete('cascade'))
        .addColumn('offset', 'bigint', (c) => c.notNull())
        .addColumn('digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('oci_upload_chunks_pk', ['upload_id', 'offset'])
        .execute();
    },
  },
  '0008-image-protection': {
    // issue 11: Glance's `protected` (no delete) and `os_hidden` (not in default lists)
    async up(db: Kysely<any>) {
      await db.schema
        .alterTable('images')
        .addColumn('is_protected', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .alterTable('images')
        .addColumn('hidden', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
    },
  },
  '0010-glance-import': {
    // issue 11: Glance's tasks are the import jobs, listed newest first for an administrator and
    // per image for anyone who sees the image; ended jobs stay, so these lists need their indexes
    async up(db: Kysely<any>) {
      await db.schema.createIndex('jobs_kind_created').on('jobs').columns(['kind', 'created_at', 'id']).execute();
      await db.schema.createIndex('jobs_image_created').on('jobs').columns(['image_id', 'created_at', 'id']).execute();
    },
  },
  '0011-oci-generated-layers': {
    // issue 10 §4: the digest of a containerDisk layer generated around a stored disk, hashed once
    // and kept, so any node (and this one after a restart) answers a blob of a generated manifest
    // without hashing the disk again. Derived data: a lost row is hashed again.
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('oci_generated_layers')
        .addColumn('disk_digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('file_name', 'varchar(255)', (c) => c.notNull())
        .addColumn('layer_digest', 'varchar(80)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('oci_generated_layers_pk', ['disk_digest', 'file_name'])
        .execute();
    },
  },
  '0012-tus-uploads': {
    // issue 12: resumable (tus) uploads and upload URLs. An upload row names the image it feeds and
    // its announced length; its received bytes are a file of the node's data directory (the
    // offset is that file's length). An upload grant is the scoped, expiring token of an upload URL.
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('resumable_uploads')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('metadata', 'text', (c) => c.notNull())
        .addColumn('created_by', 'varchar(255)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('resumable_uploads_expires').on('resumable_uploads').columns(['expires_at']).execute();
      await db.schema.createIndex('resumable_uploads_image').on('resumable_uploads').columns(['image_id']).execute();
      await db.schema
        .createTable('upload_grants')
        .addColumn('id', 'varchar(32)', (c) => c.primaryKey())
        .addColumn('secret_hash', 'varchar(64)', (c) => c.notNull())
        .addColumn('image_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('created_by', 'varchar(255)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('upload_grants_expires').on('upload_grants').columns(['expires_at']).execute();
    },
  },
};

class InCodeProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

/**
 * Brings the schema to the latest migration, or (`upTo`, for tests of one migration's data
 * changes) to the named one. Migrations run in order; one missing below the last applied is an
 * error (a schema must not be assembled out of order).
 */
export async function migrateToLatest(db: Database, opts: { upTo?: string } = {}): Promise<void> {
  const migrator = new Migrator({
    db: db.kysely,
    provider: new InCodeProvider(),
    migrationTableName: 'imago_migrations',
    migrationLockTableName: 'imago_migrations_lock',
  });
  const { error, results } = opts.upTo === undefined ? await migrator.migrateToLatest() : await migrator.migrateTo(opts.upTo);
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? String(error)}`);
  }
}
