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
import { dirname } from 'node:path';
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

export async function openDatabase(url: string): Promise<Database> {
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
  const close = async () => {
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
