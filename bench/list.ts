/**
 * bench/list — p50/p99 of a filtered, sorted list page (state=ready, type=OS, a tag, sorted by
 * createdAt desc, 50 per page) at 1,000 and 100,000 images, on SQLite and on PostgreSQL, through
 * the repository the API uses. Rows are bulk-inserted first.
 *
 * Peer: Glance lists 1,000 images in ≈ 0.48 s on these machines (shared/peers/README.md, measured
 * with the peer script there; not re-measured in this run — start the peer with
 * ../shared/peers/glance-start.sh to compare live).
 *
 *   npm run bench -- list [--queries 200]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import type { ImagesTable } from '../src/db/schema.js';
import { openDatabase, type Database } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrations.js';
import { KyselyImageRepository } from '../src/domain/image-repository.js';
import { percentile, printTable } from './support/harness.js';

const TYPES = ['OS', 'DATABLOCK', 'CDROM'];
const STATES = ['ready', 'ready', 'ready', 'error', 'disabled'];

async function fill(db: Database, n: number): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < n; i += 1000) {
    const rows: ImagesTable[] = [];
    const tags: { image_id: string; tag: string }[] = [];
    for (let k = i; k < Math.min(n, i + 1000); k++) {
      const id = randomUUID();
      rows.push({
        id, name: `image-${k}`, description: null, type: TYPES[k % 3]!, disk_format: 'qcow2', container_format: 'bare', architecture: 'x86_64', os_distro: null, os_version: null, os_type: null,
        min_disk: 0, min_ram: 0, persistent: 0, properties: '{}', tags: JSON.stringify(k % 4 === 0 ? ['golden'] : []), state: STATES[k % 5]!, state_reason: null, progress: null,
        ingest_kind: null, ingest_id: null, lock_reason: null, used_by: 0, digest: null, stored_size: k * 1000, virtual_size: k * 4000, checksum_md5: null, checksum_sha512: null,
        inspection: null, created_at: now - k * 1000, updated_at: now - k * 1000, version: 1,
        project: `p${k % 10}`, owner: 'bench', visibility: 'project', perms: 0o660, reserved_bytes: 0,
      });
      if (k % 4 === 0) tags.push({ image_id: id, tag: 'golden' });
    }
    await db.kysely.transaction().execute(async (trx) => {
      await trx.insertInto('images').values(rows).execute();
      if (tags.length) await trx.insertInto('image_tags').values(tags).execute();
    });
  }
}

async function measure(db: Database, queries: number): Promise<[number, number]> {
  const repo = new KyselyImageRepository(db);
  const times: number[] = [];
  for (let i = 0; i < queries + 10; i++) {
    const t = process.hrtime.bigint();
    const page = await repo.list({ limit: 50, state: ['ready'], type: ['OS'], tags: ['golden'], sort: { key: 'createdAt', dir: 'desc' } });
    if (page.items.length === 0) throw new Error('benchmark query matched nothing');
    if (i >= 10) times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return [percentile(times, 50), percentile(times, 99)];
}

export async function run(args: string[]): Promise<void> {
  const queries = Number(args[args.indexOf('--queries') + 1] || 200) || 200;
  const rows = [['dialect', 'images', 'p50 (ms)', 'p99 (ms)', 'vs Glance 1,000-image list (480 ms, reference)']];
  for (const dialect of ['sqlite', 'postgres'] as const) {
    for (const n of [1000, 100_000]) {
      let db: Database;
      let cleanup: () => Promise<void>;
      if (dialect === 'sqlite') {
        const dir = mkdtempSync(join(tmpdir(), 'imago-benchlist-'));
        db = await openDatabase(`sqlite:${join(dir, 'c.db')}`);
        cleanup = async () => rmSync(dir, { recursive: true, force: true });
      } else {
        const name = `imago_bench_${randomUUID().slice(0, 8)}`;
        const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
        await admin.connect();
        await admin.query(`CREATE DATABASE ${name}`);
        await admin.end();
        db = await openDatabase(`postgres://postgres@127.0.0.1:5432/${name}`);
        cleanup = async () => {
          const c = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
          await c.connect();
          await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
          await c.end();
        };
      }
      try {
        await migrateToLatest(db);
        await fill(db, n);
        if (dialect === 'postgres') await sql`ANALYZE`.execute(db.kysely);
        const [p50, p99] = await measure(db, queries);
        rows.push([dialect, String(n), p50.toFixed(2), p99.toFixed(2), (p50 / 480).toFixed(4)]);
      } finally {
        await db.close();
        await cleanup();
      }
    }
  }
  process.stdout.write(`filtered list page (state=ready, type=OS, tag=golden, createdAt desc, limit 50), ${queries} queries\n`);
  printTable(rows);
}
