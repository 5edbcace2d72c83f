/**
 * bench/list — p50/p99 of a filtered, sorted list page (state=ready, type=OS, a tag, sorted by
 * createdAt desc, 50 per page) at 1,000 and 100,000 images, on SQLite and on PostgreSQL, through
 * the repository the API uses. Rows are bulk-inserted first.
 *
 * Peer, in the same run: the live Glance (started through ../shared/peers), filled with
 * `--glance-images` images by POST /v2/images one after the other (the create rate of both is the
 * second table: Imago's through a real `imago serve`), then the same page over HTTP: a tag, a
 * property standing for the type, created_at desc, limit 50 (Glance's images stay queued: no
 * status filter). Glance at 100,000 images would take an hour to fill; its 1,000-image page is
 * the peer of every row.
 *
 *   npm run bench -- list [--queries 200] [--glance-images 1000] [--quick]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Insertable } from 'kysely';
import pg from 'pg';
import type { ImagesTable } from '../src/db/schema.js';
import { openDatabase, type Database } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrations.js';
import { KyselyImageRepository } from '../src/db/image-repository.js';
import { startGlance, type GlancePeer } from './support/glance-peer.js';
import { createImage, numberOption, percentile, printTable, serve } from './support/harness.js';

const TYPES = ['OS', 'DATABLOCK', 'CDROM'] as const;
const STATES = ['ready', 'ready', 'ready', 'error', 'disabled'] as const;
/** rows per INSERT: 500 rows × the images table's ~37 columns stay under SQLite's 32,766 bound parameters */
const BATCH = 500;

async function fill(db: Database, n: number): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < n; i += BATCH) {
    const rows: Insertable<ImagesTable>[] = [];
    const tags: { image_id: string; tag: string }[] = [];
    for (let k = i; k < Math.min(n, i + BATCH); k++) {
      const id = randomUUID();
      rows.push({
        id,
        name: `image-${k}`,
        description: null,
        type: TYPES[k % 3]!,
        disk_format: 'qcow2',
        container_format: 'bare',
        architecture: 'x86_64',
        os_distro: null,
        os_version: null,
        os_type: null,
        min_disk: 0,
        min_ram: 0,
        persistent: 0,
        properties: '{}',
        tags: JSON.stringify(k % 4 === 0 ? ['golden'] : []),
        state: STATES[k % 5]!,
        state_reason: null,
        progress: null,
        ingest_kind: null,
        ingest_id: null,
        lock_reason: null,
        used_by: 0,
        digest: null,
        stored_size: k * 1000,
        virtual_size: k * 4000,
        checksum_md5: null,
        checksum_sha512: null,
        inspection: null,
        created_at: now - k * 1000,
        updated_at: now - k * 1000,
        version: 1,
        project: `p${k % 10}`,
        owner: 'bench',
        visibility: 'project',
        perms: 0o660,
        reserved_bytes: 0,
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
    const page = await repo.list({ limit: 50, state: ['ready'], type: ['OS'], tags: ['golden'], sort: [{ key: 'createdAt', dir: 'desc' }] });
    if (page.items.length === 0) throw new Error('benchmark query matched nothing');
    if (i >= 10) times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return [percentile(times, 50), percentile(times, 99)];
}

/** Seconds per create, `n` creates one after the other. */
async function createSeconds(n: number, create: (i: number) => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await create(i);
  return Number(process.hrtime.bigint() - t) / 1e9 / n;
}

/** Fills Glance with `n` images (one in four tagged, the type as a property) and times the page; returns [create s, p50, p99]. */
async function measureGlance(glance: GlancePeer, n: number, queries: number): Promise<[number, number, number]> {
  const tag = `golden-${randomUUID().slice(0, 8)}`;
  const ids: string[] = [];
  try {
    const perCreate = await createSeconds(n, async (k) =>
      ids.push(await glance.createImage(`imago-bench-${k}`, { tags: k % 4 === 0 ? [tag] : [], imago_type: TYPES[k % 3] })),
    );
    const page = `${glance.url}/v2/images?tag=${tag}&imago_type=OS&sort=created_at:desc&limit=50`;
    const times: number[] = [];
    for (let i = 0; i < queries + 3; i++) {
      const t = process.hrtime.bigint();
      const r = await fetch(page);
      const body = (await r.json()) as { images?: unknown[] };
      if (!r.ok || !body.images?.length) throw new Error(`Glance: GET ${page} answered ${r.status} with no images`);
      if (i >= 3) times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    return [perCreate, percentile(times, 50), percentile(times, 99)];
  } finally {
    // one at a time: Glance's sqlite catalog answers 500 (database is locked) to parallel deletes
    for (const id of ids) await glance.deleteImage(id);
  }
}

export async function run(args: string[]): Promise<void> {
  const queries = numberOption(args, '--queries', 200, 20);
  const glanceImages = numberOption(args, '--glance-images', 1000, 20);
  const sizes = args.includes('--quick') ? [100, 2000] : [1000, 100_000];
  const glance = await startGlance();
  let glanceCreate: number, glanceP50: number, glanceP99: number, imagoCreate: number;
  try {
    [glanceCreate, glanceP50, glanceP99] = await measureGlance(glance, glanceImages, queries);
    const s = await serve();
    try {
      imagoCreate = await createSeconds(glanceImages, (k) => createImage(s, `bench-${k}`));
    } finally {
      await s.stop();
    }
  } finally {
    await glance.stop();
  }
  const rows = [['dialect', 'images', 'p50 (ms)', 'p99 (ms)', `Glance 25.1 p50 at ${glanceImages} images (ms)`, 'ratio p50 imago / Glance']];
  for (const dialect of ['sqlite', 'postgres'] as const) {
    for (const n of sizes) {
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
        rows.push([dialect, String(n), p50.toFixed(2), p99.toFixed(2), glanceP50.toFixed(2), (p50 / glanceP50).toFixed(4)]);
      } finally {
        await db.close();
        await cleanup();
      }
    }
  }
  process.stdout.write(
    `filtered list page (state=ready, type=OS, tag=golden, createdAt desc, limit 50), ${queries} queries; imago through the repository, Glance over HTTP\n`,
  );
  printTable(rows);
  process.stdout.write(`Glance p99 at ${glanceImages} images: ${glanceP99.toFixed(2)} ms\n\n`);
  process.stdout.write(`${glanceImages} creates one after the other over HTTP (POST), same run\n`);
  printTable([
    ['server', 'creates/s', 'ratio imago / Glance (time per create)'],
    ['imago serve (SQLite)', (1 / imagoCreate).toFixed(0), (imagoCreate / glanceCreate).toFixed(2)],
    ['Glance 25.1 (sqlite)', (1 / glanceCreate).toFixed(0), '-'],
  ]);
}
