/**
 * Opens the catalog database: SQLite (embedded default, better-sqlite3) or PostgreSQL (pg), both
 * through Kysely. The URL chooses: `sqlite:/path/imago.db` (or a bare path) or `postgres://...`.
 *
 * SQLite runs in WAL mode with synchronous=NORMAL, and `durable()` fsyncs the WAL on the thread
 * pool: the server awaits it before it answers a request that changed something, so a transaction
 * acknowledged to a client (an image turned ready) survives kill -9 and power loss as with
 * synchronous=FULL — but the fsync no longer blocks the event loop (better-sqlite3 is synchronous:
 * with FULL every commit, e.g. each upload's progress, stalled every request for the disk's flush,
 * up to hundreds of ms under a hundred uploads, issue 20), and one fsync covers every commit made
 * before it (group commit). A crash loses at most commits nobody was told about; SQLite's WAL
 * checksums keep the file consistent either way.
 */
import { mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, type SqliteDatabase as KyselySqlite } from 'kysely';
import type { Schema } from './schema.js';

export type Dialect = 'sqlite' | 'postgres';

export interface Database {
  kysely: Kysely<Schema>;
  dialect: Dialect;
  url: string;
  /** Resolves once every transaction committed before the call is on disk. */
  durable(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /**
   * SQLite: checkpoint the WAL on a thread of its own instead of in the committing call (see
   * `checkpointThread`). `imago serve` sets it; tests and one-shot commands need not.
   */
  checkpointThread?: boolean;
}

export async function openDatabase(url: string, opts: OpenDatabaseOptions = {}): Promise<Database> {
  if (/^postgres(ql)?:\/\//.test(url)) {
    // loaded only for PostgreSQL: the embedded default does not pay its ~10 MiB of memory
    const { default: pg } = await import('pg');
    // int8 (bigint) and numeric come back as numbers: sizes and epoch milliseconds fit in 2^53.
    pg.types.setTypeParser(20, (v) => Number(v));
    pg.types.setTypeParser(1700, (v) => Number(v));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle pooled connection that dies (PostgreSQL restarted, the connection killed) emits
    // 'error' on the pool; without a listener that would crash the process. The pool drops the
    // client, and the next query opens a new connection or reports the failure to its caller.
    pool.on('error', () => undefined);
    try {
      const c = await pool.connect();
      c.release();
    } catch (e) {
      await pool.end();
      throw new Error(postgresConnectError(url, e));
    }
    const kysely = new Kysely<Schema>({ dialect: new PostgresDialect({ pool }) });
    // PostgreSQL acknowledges a commit once it is durable
    return { kysely, dialect: 'postgres', url, durable: async () => undefined, close: () => kysely.destroy() };
  }
  const path = url.startsWith('sqlite:') ? url.slice('sqlite:'.length) : url;
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const sqlite = new SqliteDatabase(path);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const kysely = new Kysely<Schema>({ dialect: new SqliteDialect({ database: preparedOnce(sqlite) }) });
  if (path === ':memory:') return { kysely, dialect: 'sqlite', url, durable: async () => undefined, close: () => kysely.destroy() };
  const wal = walSyncer(`${path}-wal`);
  const checkpointer = opts.checkpointThread ? checkpointThread(sqlite, path) : undefined;
  const close = async () => {
    await checkpointer?.close();
    await kysely.destroy();
    await wal.close();
  };
  return { kysely, dialect: 'sqlite', url, durable: groupSync(() => wal.sync()), close };
}

/**
 * better-sqlite3 as Kysely uses it, with each SQL text prepared once: Kysely's driver prepares
 * every query anew, and under 1,000 concurrent downloads compiling the same few statements was a
 * quarter of the event loop's time (issue 20). A statement is reusable because Kysely runs each
 * synchronously to its end (`all`/`run`; we never stream SQLite results). SQLite re-prepares a
 * cached statement itself after a schema change. `max` bounds the cache (queries with IN lists of
 * varying length have distinct texts): the oldest entry goes first.
 */
export function preparedOnce(db: SqliteDatabase.Database, max = 256): KyselySqlite {
  const cache = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => db.close(),
    prepare(sql) {
      let stmt = cache.get(sql);
      if (stmt) return stmt;
      stmt = db.prepare(sql);
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(sql, stmt);
      return stmt;
    },
  };
}

/**
 * One `sync` for many callers: a call made while a sync runs waits for the next one (which then
 * covers what was written meanwhile); all calls made during one sync share that next one.
 */
export function groupSync(sync: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  const start = (): Promise<void> => {
    const p = sync().finally(() => {
      if (running === p) running = undefined;
    });
    running = p;
    return p;
  };
  return () => {
    if (!running) return start();
    next ??= running
      .catch(() => undefined)
      .then(() => {
        next = undefined;
        return start();
      });
    return next;
  };
}

/**
 * fdatasync of `file` (the WAL) through a handle opened once and kept: opening and closing it per
 * sync was a sixth of a create's main-thread time (issue 11's create rate). The WAL exists from the
 * first write until the connection closes (a checkpoint truncates it in place), so the handle stays
 * valid while the database is open. Nothing to do while the file does not exist yet.
 */
function walSyncer(file: string): { sync(): Promise<void>; close(): Promise<void> } {
  let handle: Promise<FileHandle | undefined> | undefined;
  const opened = (): Promise<FileHandle | undefined> =>
    (handle ??= open(file, 'r+').catch((e: NodeJS.ErrnoException) => {
      handle = undefined; // not there yet: try again next time
      if (e.code === 'ENOENT') return undefined;
      throw e;
    }));
  return {
    async sync() {
      const fh = await opened();
      await fh?.datasync();
    },
    async close() {
      const fh = await handle?.catch(() => undefined);
      handle = undefined;
      await fh?.close();
    },
  };
}

// Plain JS so it runs the same from dist/ and under tsx (as the hashing workers').
const CHECKPOINT_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('busy_timeout = 5000');
db.pragma('synchronous = NORMAL');
const checkpoint = () => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch (e) {
    parentPort.postMessage({ error: e.message });
  }
};
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.close();
});
`;

/**
 * The WAL's checkpoints on a thread of their own. SQLite checkpoints in the commit that takes the
 * WAL past 1,000 pages, and a checkpoint fsyncs the WAL and then the database file: with
 * better-sqlite3 that is on the event loop, and under 100 concurrent uploads (each writing its
 * progress) those fsyncs waited behind the uploads' own writes — up to 460 ms of a stopped loop
 * (issue 20 item 6, strace of `imago serve`). The serving connection turns its automatic
 * checkpoints off; a worker thread with its own connection runs a PASSIVE checkpoint every
 * `intervalMs` (it never blocks a writer or reader; a WAL fully copied is reused from its start by
 * the next write). The last connection to close checkpoints what is left, as SQLite always does.
 *
 * The serving connection also runs with synchronous=OFF: the one sync it still made was the WAL
 * header's, each time a write restarts the WAL after a complete checkpoint (once a second at most,
 * still up to 0.1–0.5 s of a stopped loop under load). Nothing is less durable for it: what a client
 * is told is committed has been through `durable()`, the fdatasync of the whole WAL (header and
 * frames) off the loop; a WAL is restarted only once a checkpoint has copied every frame into the
 * database file and synced it — on this thread, whose connection keeps synchronous=NORMAL; and at
 * close, once this thread is gone, the serving connection syncs again (NORMAL) for its last checkpoint.
 *
 * The thread runs at the event loop's priority, not below it: its connection takes the same
 * SQLite locks (the WAL index, the pager's) as the serving one, so a niced checkpointer preempted
 * while holding one stopped the loop until it got a CPU again — 26 ms in one statement under 100
 * uploads (perf sched, issue 20 item 6). Its own work is a few ms a second, mostly waiting for the disk.
 */
function checkpointThread(sqlite: SqliteDatabase.Database, path: string, intervalMs = 1000): { close(): Promise<void> } {
  const byItself = () => {
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('wal_autocheckpoint = 1000');
  };
  sqlite.pragma('wal_autocheckpoint = 0');
  sqlite.pragma('synchronous = OFF');
  const worker = new Worker(CHECKPOINT_WORKER, {
    eval: true,
    workerData: { driver: createRequire(import.meta.url).resolve('better-sqlite3'), path, intervalMs },
  });
  // a checkpoint that fails is retried at the next interval; say why once
  let said = false;
  worker.on('message', (m: { error?: string }) => {
    if (m.error && !said) {
      said = true;
      process.emitWarning(`imago: the WAL checkpoint of ${path} failed (${m.error}); it is retried every ${intervalMs} ms`);
    }
  });
  worker.on('error', (e) => {
    // the thread could not start or died: checkpoints go back to the committing calls
    process.emitWarning(`imago: the checkpoint thread of ${path} stopped (${e.message}); SQLite checkpoints in its commits again`);
    byItself();
  });
  worker.unref();
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    async close() {
      worker.ref(); // the process waits for the last checkpoint
      worker.postMessage('close');
      await exited;
      byItself();
    },
  };
}

/** What went wrong connecting to PostgreSQL at `url`, and what to do about it; no password shown. */
export function postgresConnectError(url: string, e: unknown): string {
  const shown = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  // 3D000 invalid_catalog_name: the server is up, the database was never created.
  if ((e as { code?: string }).code === '3D000') {
    const u = new URL(url);
    const name = decodeURIComponent(u.pathname.slice(1));
    const args = [u.hostname && `-h ${u.hostname}`, u.port && `-p ${u.port}`, u.username && `-U ${decodeURIComponent(u.username)}`, name]
      .filter(Boolean)
      .join(' ');
    return `PostgreSQL at ${shown} has no database "${name}": create it with "createdb ${args}" (Imago creates its tables itself), or point IMAGO_DATABASE_URL / --database at an existing database`;
  }
  return `cannot connect to PostgreSQL at ${shown}: ${(e as Error).message}; check that the server runs and the URL (IMAGO_DATABASE_URL / --database) is right`;
}

/** True when `e` is a unique/primary-key violation, in either dialect. */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}
