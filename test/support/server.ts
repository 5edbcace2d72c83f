/**
 * Starts a real Imago (the composition root, not a mock) on 127.0.0.1 with a temp data dir and
 * SQLite, or PostgreSQL in a fresh database on 127.0.0.1:5432. `stop()` removes everything.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startApp, type App } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';

export type Dialect = 'sqlite' | 'postgres';
export const PG_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test';

export interface TestServer {
  app: App;
  url: string;
  dataDir: string;
  config: Config;
  /** the server-admin token the first start wrote to <data>/admin.token */
  token: string;
  stop(): Promise<void>;
}

/** Server-admin tokens of the servers tests started, by origin (see `adminFetch`). */
const ADMIN_TOKENS = new Map<string, string>();

/** Remembers the server-admin token of a server started from `dataDir` (also for spawned servers). */
export function registerAdminToken(url: string, dataDir: string): string {
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  ADMIN_TOKENS.set(new URL(url).origin, token);
  return token;
}

/**
 * fetch as the server admin of whichever test server the URL points at; an explicit
 * Authorization header (or `authorization: ''` for anonymous) wins.
 */
export const adminFetch: typeof fetch = (input, init = {}) => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const token = ADMIN_TOKENS.get(new URL(url).origin);
  const headers = new Headers(init.headers);
  if (!headers.has('authorization') && token) headers.set('authorization', `Bearer ${token}`);
  if (headers.get('authorization') === '') headers.delete('authorization');
  return fetch(input, { ...init, headers });
};

/** A fresh, empty database of `dialect` (SQLite: a file in a new temporary directory); its URL and a drop function. */
export async function freshDatabase(dialect: 'sqlite' | 'postgres'): Promise<{ url: string; drop(): Promise<void> }> {
  if (dialect === 'postgres') return freshPgDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'imago-db-'));
  return { url: `sqlite:${join(dir, 'test.db')}`, drop: async () => rmSync(dir, { recursive: true, force: true }) };
}

/** A fresh PostgreSQL database; returns its URL and a drop function. */
export async function freshPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `imago_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return {
    url: `postgres://postgres@127.0.0.1:5432/${name}`,
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export async function startTestServer(opts: { dialect?: Dialect; env?: Record<string, string>; dataDir?: string } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'imago-test-'));
  let dropDb: (() => Promise<void>) | undefined;
  const env: Record<string, string> = { IMAGO_DATA: dataDir, IMAGO_LISTEN: '127.0.0.1:0', IMAGO_GC_GRACE_MS: '0', ...opts.env };
  if (opts.dialect === 'postgres') {
    const db = await freshPgDatabase();
    env.IMAGO_DATABASE_URL = db.url;
    dropDb = db.drop;
  }
  const config = loadConfig({}, env);
  const app = await startApp(config);
  const token = registerAdminToken(app.url!, dataDir);
  const server: TestServer = {
    app,
    url: app.url!,
    dataDir,
    config,
    token,
    async stop() {
      // the app running now: a test may have restarted it on the same data (server.app replaced)
      await server.app.close();
      await dropDb?.();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** A JSON request to a test server as its server admin; the body parsed when there is one. */
export async function apiRequest(s: TestServer, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await adminFetch(`${s.url}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, any>) : undefined, text };
}

/**
 * A project named `project` and a writer token in it for `user`, made by the server admin of `s`
 * (each request must succeed); returns the token's secret.
 */
export async function projectWriterToken(s: { url: string; token: string }, project: string, user: string, name: string): Promise<string> {
  const post = async (path: string, body: unknown) => {
    const r = await fetch(`${s.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${path}: ${r.status} ${text}`);
    return JSON.parse(text) as Record<string, string>;
  };
  await post('/api/v1/projects', { name: project });
  return (await post('/api/v1/tokens', { name, project, role: 'writer', user })).token!;
}
