/**
 * The composition root: config → adapters (catalog database, blob store) → domain → HTTP edge.
 * `imago serve` and `imago gc` start here; tests start the same thing on a temp dir.
 */
import { mkdir, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Cron } from 'croner';
import { buildApi } from './api/server.js';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/database.js';
import { migrateToLatest } from './db/migrations.js';
import { AccessRepository } from './domain/access-repository.js';
import { AccessService } from './domain/access-service.js';
import { Authenticator, mintToken } from './domain/authenticator.js';
import { ImageEvents } from './domain/images/events.js';
import { planGc, runGc, type GcPlan } from './domain/gc.js';
import { KyselyImageRepository } from './domain/image-repository.js';
import { ImageCatalog } from './domain/images/image-catalog.js';
import { IngestCoordinator } from './domain/images/ingest-coordinator.js';
import { VariantService } from './domain/images/variant-service.js';
import { ImportRunner } from './domain/import-runner.js';
import { ConvertRunner } from './domain/convert-runner.js';
import { Converter } from './domain/images/variants.js';
import { UrlPolicy } from './io/url-policy.js';
import type { BlobStore } from './store/blob-store.js';
import { FsBlobStore } from './store/fs-blob-store.js';

export interface App {
  config: Config;
  db: Database;
  store: BlobStore;
  images: ImageCatalog;
  ingests: IngestCoordinator;
  variants: VariantService;
  imports: ImportRunner;
  /** convert-on-import jobs */
  converts: ConvertRunner;
  events: ImageEvents;
  access: AccessService;
  api: FastifyInstance;
  /** the server-admin token made at the first start (print it once); absent on later starts */
  bootstrapToken?: string;
  /** the bound address once listening */
  url?: string;
  gc(opts: { dryRun: boolean }): Promise<{ plan: GcPlan; deleted?: { count: number; bytes: number } }>;
  close(): Promise<void>;
}

export async function createApp(config: Config, opts: { logger?: boolean } = {}): Promise<App> {
  await mkdir(config.dataDir, { recursive: true });
  const store = new FsBlobStore(join(config.dataDir));
  try {
    await store.probe();
  } catch (e) {
    throw new Error(`blob storage ${store.description} failed its start-up check: ${(e as Error).message}`);
  }
  const db = await openDatabase(config.databaseUrl);
  try {
    await migrateToLatest(db);
  } catch (e) {
    await db.close();
    throw new Error(`catalog database ${redact(config.databaseUrl)} could not be prepared: ${(e as Error).message}`);
  }
  const repo = new KyselyImageRepository(db);
  const events = new ImageEvents();
  const converter = new Converter(store, join(config.dataDir, 'scratch'), config.md5);
  const images = new ImageCatalog(repo, events);
  const ingests = new IngestCoordinator(images, store, { maxImageBytes: config.maxImageBytes, md5: config.md5, inspectLimits: config.inspectLimits });
  images.whenDeleting((id) => ingests.imageDeleted(id));
  const variants = new VariantService(images, store, converter);
  const converts = new ConvertRunner(db, images, store, converter, { serverTarget: config.convertTo });
  ingests.whenStored((img) => converts.afterIngest(img));
  const imports = new ImportRunner(db, images, ingests, { policy: new UrlPolicy(config.importAllow), maxImageBytes: config.maxImageBytes });
  const accessRepo = new AccessRepository(db);
  const auth = new Authenticator(accessRepo, { jwksCooldownMs: config.oidcJwksCooldownMs, clockSkewSec: config.oidcClockSkewSec });
  const access = new AccessService(images, ingests, variants, accessRepo, auth, imports);
  let bootstrapToken: string | undefined;
  try {
    bootstrapToken = await bootstrapAdmin(accessRepo, config.dataDir);
  } catch (e) {
    await db.close();
    throw new Error(`could not create the first server-admin token: ${(e as Error).message}`);
  }
  const api = buildApi({ access, events, logger: opts.logger, bodyIdleTimeoutMs: config.bodyIdleTimeoutMs, eventsRecheckMs: config.eventsRecheckMs });
  let cron: Cron | undefined;
  const app: App = {
    config,
    db,
    store,
    images,
    ingests,
    variants,
    imports,
    converts,
    events,
    access,
    api,
    bootstrapToken,
    async gc({ dryRun }) {
      const plan = await planGc({ store, referenced: await repo.referencedDigests(), now: new Date(), graceMs: config.gcGraceMs });
      if (dryRun) return { plan };
      const deleted = await runGc(plan, store, { recheck: () => repo.referencedDigests() });
      return { plan, deleted };
    },
    async close() {
      cron?.stop();
      await api.close();
      await imports.drain();
      await converts.drain();
      await db.close();
    },
  };
  if (config.gcSchedule) {
    cron = new Cron(config.gcSchedule, { protect: true }, async () => {
      try {
        const r = await app.gc({ dryRun: false });
        api.log.info({ deleted: r.deleted }, 'scheduled gc');
      } catch (e) {
        api.log.error({ err: e }, 'scheduled gc failed');
      }
    });
  }
  return app;
}

/** Recovers from whatever a crash left, then listens. */
export async function startApp(config: Config, opts: { logger?: boolean } = {}): Promise<App> {
  const app = await createApp(config, opts);
  try {
    // what a crash left: uploads cut off, deletions half done, staging and conversion scratch
    const { interrupted, swept } = await app.ingests.recover();
    const deleted = await app.images.finishDeletions();
    await app.variants.sweep();
    const rec = { interrupted, deleted, swept };
    const resumed = await app.imports.resume();
    const converts = await app.converts.resume();
    if (rec.interrupted || rec.deleted || rec.swept || resumed || converts.resumed || converts.unlocked) {
      app.api.log.info({ ...rec, importsResumed: resumed, convertsResumed: converts.resumed, convertLocksFreed: converts.unlocked }, 'recovered from an unclean stop');
    }
    const address = await app.api.listen({ host: config.listen.host, port: config.listen.port });
    app.url = address.replace('[::1]', '127.0.0.1');
    return app;
  } catch (e) {
    await app.close();
    throw e;
  }
}

/**
 * First start (no users yet): a server admin `admin` and a server-admin token, written to
 * `<data>/admin.token` (mode 0600, via a temp file and rename) and returned to be printed once.
 */
export async function bootstrapAdmin(repo: AccessRepository, dataDir: string): Promise<string | undefined> {
  if ((await repo.users()).length > 0) return undefined;
  return (await mintAdminToken(repo, dataDir, 'bootstrap', 'imago (first start)')).token;
}

/** `imago admin-token`: a new server-admin token for `admin`, replacing <data>/admin.token. */
export async function writeAdminToken(app: App, name: string): Promise<{ id: string; path: string }> {
  const r = await mintAdminToken(new AccessRepository(app.db), app.config.dataDir, name, 'imago admin-token (local)');
  await new AccessRepository(app.db).audit({ actor: 'local admin-token command', action: 'token.create', target: name, result: 'ok', detail: { id: r.id, role: 'server-admin' } });
  return { id: r.id, path: r.path };
}

async function mintAdminToken(repo: AccessRepository, dataDir: string, name: string, createdBy: string): Promise<{ id: string; token: string; path: string }> {
  await repo.ensureUser('admin', true);
  const minted = mintToken();
  await repo.insertToken({ id: minted.id, name, user: 'admin', role: 'server-admin', createdAt: new Date(), createdBy, secretHash: minted.secretHash });
  const path = join(dataDir, ADMIN_TOKEN_FILE);
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${minted.token}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  return { id: minted.id, token: minted.token, path };
}

export const ADMIN_TOKEN_FILE = 'admin.token';

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}
