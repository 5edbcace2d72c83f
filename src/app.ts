/**
 * The composition root: config → adapters (catalog database, blob store) → domain → HTTP edge.
 * `imago serve` and `imago gc` start here; tests start the same thing on a temp dir.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, rename } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Cron } from 'croner';
import { buildApi } from './api/build-api.js';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/database.js';
import { migrateToLatest } from './db/migrations.js';
import { KyselyAccessRepository } from './db/access-repository.js';
import { KyselyImageRepository } from './db/image-repository.js';
import { KyselyJobQueue } from './db/job-queue.js';
import { KyselyRegistryRepository } from './db/registry-repository.js';
import { KyselyUploadRepository } from './db/upload-repository.js';
import { UploadGrants } from './domain/access/upload-grants.js';
import { ResumableUploads } from './domain/images/resumable-uploads.js';
import type { AccessRepository } from './domain/access/access-repository.js';
import { AuditLog } from './domain/access/audit-log.js';
import { Authenticator, mintToken } from './domain/access/authenticator.js';
import { Authorizer } from './domain/access/authorizer.js';
import { IdentityAdmin } from './domain/access/identity-admin.js';
import { ImageAccess } from './domain/access/image-access.js';
import { ImageSharing } from './domain/access/image-sharing.js';
import { ProjectAdmin } from './domain/access/project-admin.js';
import { ImageEvents } from './domain/images/events.js';
import { planGc, runGc, type GcPlan } from './domain/images/gc.js';
import { ImageCatalog } from './domain/images/image-catalog.js';
import { IngestCoordinator } from './domain/images/ingest-coordinator.js';
import { VariantService } from './domain/images/variant-service.js';
import { ConvertJobs } from './domain/jobs/convert-job.js';
import { GcJob } from './domain/jobs/gc-job.js';
import { ImportJobs } from './domain/jobs/import-job.js';
import { JobRunner } from './domain/jobs/job-runner.js';
import { Converter } from './domain/images/variants.js';
import { BlobUploads } from './domain/registry/blob-uploads.js';
import { EarlyLayerIngests } from './domain/registry/early-layer-ingests.js';
import { OciRegistry } from './domain/registry/oci-registry.js';
import { RegistryAccess } from './domain/registry/registry-access.js';
import { RegistryQuota } from './domain/registry/registry-quota.js';
import { VmImagePushes } from './domain/registry/vm-image-pushes.js';
import { VmImageServing } from './domain/registry/vm-image-serving.js';
import { UrlPolicy } from './io/url-policy.js';
import type { BlobStore, Digest } from './store/blob-store.js';
import { blobStoreFromUrl } from './store/blob-store-from-url.js';

export interface App {
  config: Config;
  db: Database;
  store: BlobStore;
  images: ImageCatalog;
  ingests: IngestCoordinator;
  variants: VariantService;
  /** the one runner of background jobs (imports, conversions, scheduled GC) */
  jobs: JobRunner;
  imports: ImportJobs;
  /** convert-on-import jobs */
  converts: ConvertJobs;
  events: ImageEvents;
  /** credentials → principal */
  authenticator: Authenticator;
  /** the authorization check every door calls */
  authorizer: Authorizer;
  /** image operations on behalf of a principal (checked, audited) */
  imageAccess: ImageAccess;
  /** image members (Glance sharing) */
  sharing: ImageSharing;
  projects: ProjectAdmin;
  /** users, groups, tokens, OIDC settings */
  identity: IdentityAdmin;
  audit: AuditLog;
  /** the OCI registry (manifests, tags, referrers, catalog, blob reads) and its blob pushes */
  registry: OciRegistry;
  uploads: BlobUploads;
  /** containerDisk layers ingested while they arrive (their outcomes, kept for the manifest PUT) */
  earlyIngests: EarlyLayerIngests;
  /** the manifest-put hook that makes pushed VM images into images */
  vmPushes: VmImagePushes;
  /** resumable (tus) uploads of images */
  resumable: ResumableUploads;
  api: FastifyInstance;
  /** the server-admin token made at the first start (print it once); absent on later starts */
  bootstrapToken?: string;
  /** the bound address once listening */
  url?: string;
  gc(opts: { dryRun: boolean }): Promise<{
    plan: GcPlan;
    deleted?: { count: number; bytes: number };
    /** resumable uploads in flight (after expiry) and the bytes they hold: scratch, kept */
    resumable: { count: number; bytes: number };
  }>;
  close(): Promise<void>;
}

export async function createApp(config: Config, opts: { logger?: boolean } = {}): Promise<App> {
  await mkdir(config.dataDir, { recursive: true });
  const store = blobStoreFromUrl(config.dataDir);
  try {
    await store.probe();
  } catch (e) {
    throw new Error(`blob storage ${store.description} failed its start-up check: ${(e as Error).message}`);
  }
  const db = await openDatabase(config.databaseUrl, { checkpointThread: true });
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
  const variants = new VariantService(images, store, converter);
  const queue = new KyselyJobQueue(db);
  const jobs = new JobRunner(queue, { owner: nodeId(config.dataDir) });
  const converts = new ConvertJobs(queue, jobs, images, store, converter, { serverTarget: config.convertTo });
  ingests.whenStored((img) => converts.afterIngest(img));
  const imports = new ImportJobs(queue, jobs, images, ingests, { policy: new UrlPolicy(config.importAllow), maxImageBytes: config.maxImageBytes });
  const accessRepo = new KyselyAccessRepository(db);
  const authenticator = new Authenticator(accessRepo, { jwksCooldownMs: config.oidcJwksCooldownMs, clockSkewSec: config.oidcClockSkewSec });
  const authorizer = new Authorizer(images, accessRepo);
  const audit = new AuditLog(accessRepo, authorizer);
  const imageAccess = new ImageAccess(images, ingests, variants, accessRepo, authorizer, audit, imports);
  const uploadRepo = new KyselyUploadRepository(db);
  const resumable = new ResumableUploads(uploadRepo, ingests, {
    dir: join(config.dataDir, RESUMABLE_DIR),
    ttlMs: config.resumableUploadTtlMs,
    suspendIdleMs: config.resumableSuspendIdleMs,
  });
  imageAccess.withUploads(resumable, new UploadGrants(uploadRepo, { maxTtlMs: config.uploadUrlTtlMs }));
  images.whenDeleting((id) => {
    ingests.imageDeleted(id);
    // (the image is gone by the time an error could be told to anyone: logged)
    resumable.imageDeleted(id).catch((e: unknown) => api.log.error({ err: e, image: id }, 'the resumable uploads of a deleted image were not removed'));
  });
  const sharing = new ImageSharing(images, accessRepo, authorizer, audit);
  const projects = new ProjectAdmin(images, accessRepo, authorizer, audit);
  const identity = new IdentityAdmin(accessRepo, authenticator, authorizer, audit);
  // the registry's writes that add bytes take the project's quota lock the REST ingest takes
  const registryRepo = new KyselyRegistryRepository(db, (project, fn) =>
    repo.withProjectLock(project, (trx, tx) =>
      fn(trx, {
        limit: tx.limits.storedBytes,
        used: async () => {
          const u = await tx.usage();
          return u.storedBytes + u.stagingBytes;
        },
      }),
    ),
  );
  const registryAccess = new RegistryAccess(accessRepo);
  const registryQuota = new RegistryQuota(accessRepo, repo);
  const registry = new OciRegistry(registryRepo, store, registryAccess, registryQuota, audit);
  // a containerDisk layer's disk is ingested while the layer arrives; the manifest PUT takes the outcome
  const earlyIngests = new EarlyLayerIngests(store, { maxImageBytes: config.maxImageBytes, md5: config.md5, inspectLimits: config.inspectLimits });
  // issue 10 §3: a pushed VM image (disk file or containerDisk) becomes an image through the one ingest path
  const vmPushes = new VmImagePushes(
    images,
    imageAccess,
    store,
    { maxImageBytes: config.maxImageBytes, inspectLimits: config.inspectLimits },
    {
      warn: (obj, msg) => api.log.warn(obj, msg),
    },
    earlyIngests,
  );
  registry.whenManifestPut((e) => vmPushes.onManifestPut(e));
  // issue 10 §4: every image pulls as a containerDisk (and `<tag>-artifact` as an oras artifact)
  registry.serveGenerated(new VmImageServing(imageAccess, store, registryRepo));
  const uploads = new BlobUploads(
    registryRepo,
    store,
    registryAccess,
    registryQuota,
    {
      maxBlobBytes: config.maxImageBytes,
      uploadTtlMs: config.ociUploadTtlMs,
    },
    earlyIngests,
  );
  // what GC keeps: every blob an image, a variant, or the registry (manifests, linked blobs, open uploads) references
  const referenced = async () => {
    const [images, oci] = await Promise.all([repo.referencedDigests(), uploads.referencedDigests()]);
    for (const d of oci) images.add(d);
    // the disks of containerDisk layers ingested early, waiting for their manifest (this node's)
    for (const d of earlyIngests.referencedDigests()) images.add(d);
    return images;
  };
  const gcPlan = async () => planGc({ store, referenced: await referenced(), now: new Date(), graceMs: config.gcGraceMs });
  let bootstrapToken: string | undefined;
  try {
    bootstrapToken = await bootstrapAdmin(accessRepo, config.dataDir);
  } catch (e) {
    await db.close();
    throw new Error(`could not create the first server-admin token: ${(e as Error).message}`);
  }
  const api = buildApi({
    authenticator,
    authorizer,
    imageAccess,
    sharing,
    projects,
    identity,
    audit,
    registry,
    uploads,
    events,
    logger: opts.logger,
    bodyIdleTimeoutMs: config.bodyIdleTimeoutMs,
    eventsRecheckMs: config.eventsRecheckMs,
    osHashAlgo: config.osHashAlgo,
    durable: () => db.durable(),
    resumable,
    maxImageBytes: config.maxImageBytes,
    uploadUrlTtlMs: config.uploadUrlTtlMs,
    console: { oidc: config.consoleOidc },
    gcPlan,
    consoleDir: config.consoleDir ?? CONSOLE_DIR,
  });
  // a deleted disk's generated containerDisk layers are forgotten with it
  const forget = (deleted: Digest[]) => registryRepo.forgetGeneratedLayers(deleted);
  const gcJob = new GcJob(queue, jobs, { store, referenced, forget, graceMs: config.gcGraceMs, log: api.log });
  let cron: Cron | undefined;
  // resumable uploads past their lifetime end every minute (and at GC), on every node
  const expiry = setInterval(() => {
    resumable.expire().catch((e: unknown) => api.log.error({ err: e }, 'resumable upload expiry failed'));
  }, 60_000);
  expiry.unref();
  const app: App = {
    config,
    db,
    store,
    images,
    ingests,
    variants,
    jobs,
    imports,
    converts,
    events,
    authenticator,
    authorizer,
    imageAccess,
    sharing,
    projects,
    identity,
    audit,
    registry,
    uploads,
    earlyIngests,
    vmPushes,
    resumable,
    api,
    bootstrapToken,
    async gc({ dryRun }) {
      // expired upload sessions release their chunks first; expired resumable uploads fail their
      // images and remove their part files (their bytes were never in the store)
      if (!dryRun) {
        await uploads.expire();
        await resumable.expire();
        await uploadRepo.deleteGrantsBefore(new Date());
      }
      const plan = await gcPlan();
      const inFlight = await resumable.inFlightBytes();
      if (dryRun) return { plan, resumable: inFlight };
      const deleted = await runGc(plan, store, { recheck: referenced, forget });
      return { plan, deleted, resumable: inFlight };
    },
    async close() {
      cron?.stop();
      clearInterval(expiry);
      // running resumable ingests stop without failing their images: they resume at the next start
      await resumable.suspendAll();
      await api.close();
      await jobs.close();
      await db.close();
    },
  };
  if (config.gcSchedule) {
    // the schedule only enqueues: the collection runs on the job queue, one node per tick
    cron = new Cron(config.gcSchedule, { protect: true }, async () => {
      try {
        await gcJob.enqueue(new Date());
      } catch (e) {
        api.log.error({ err: e }, 'scheduled gc could not be queued');
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
    // resumable uploads keep their images `importing`: they resume on their next request
    const inFlight = await app.resumable.inFlight();
    const { interrupted, swept } = await app.ingests.recover((ingestId) => inFlight.has(ingestId));
    const deleted = await app.images.finishDeletions();
    // OCI upload sessions survive a restart; those idle past their lifetime end here
    const uploadsExpired = (await app.uploads.expire()) + (await app.resumable.expire());
    // a resumable upload whose last byte arrived just before the stop gets its verdict now
    await app.resumable.resumeComplete((id, e) => app.api.log.error({ err: e, upload: id }, 'resumable upload could not be finished'));
    await app.variants.sweep();
    const rec = { interrupted, deleted, swept, uploadsExpired };
    const resumed = await app.jobs.start();
    const unlocked = await app.converts.freeStrandedLocks();
    const importsResumed = resumed.import ?? 0;
    const convertsResumed = resumed.convert ?? 0;
    if (rec.interrupted || rec.deleted || rec.swept || rec.uploadsExpired || importsResumed || convertsResumed || unlocked) {
      app.api.log.info({ ...rec, importsResumed, convertsResumed, convertLocksFreed: unlocked }, 'recovered from an unclean stop');
    }
    // node's default backlog (511) overflowed under 1,000 clients connecting at once (resets); the
    // kernel caps it at net.core.somaxconn
    const address = await app.api.listen({ host: config.listen.host, port: config.listen.port, backlog: 4096 });
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
  const repo = new KyselyAccessRepository(app.db);
  const r = await mintAdminToken(repo, app.config.dataDir, name, 'imago admin-token (local)');
  await repo.audit({ actor: 'local admin-token command', action: 'token.create', target: name, result: 'ok', detail: { id: r.id, role: 'server-admin' } });
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
/** where resumable uploads keep their received bytes, under the data directory (local to the node) */
export const RESUMABLE_DIR = 'uploads-resumable';

/**
 * Memory relief (src/io/memory-relief.ts) as the server's own modules see it. `imago serve` turns
 * it on through here, not by importing memory-relief itself: the CLI runs from one bundle
 * (scripts/bundle-cli.js) while the server is this unbundled module graph, so the CLI's copy of
 * memory-relief is another module instance than the one ingest reports to — enabled there, the
 * relief never ran (issue 20, found in the fourth session).
 */
export { enableMemoryRelief } from './io/memory-relief.js';

/** The console `npm run build` made (vite build web/): <package>/web/dist, from src/ (tsx) or dist/ alike. */
const CONSOLE_DIR = join(import.meta.dirname, '..', 'web', 'dist');

/**
 * This node's identity as a job worker: the same after a restart on the same host and data
 * directory (so it takes its own jobs back at once), different for every other node.
 */
function nodeId(dataDir: string): string {
  const host = hostname();
  return `${host.slice(0, 40)}-${createHash('sha256')
    .update(`${host}\0${resolve(dataDir)}`)
    .digest('hex')
    .slice(0, 16)}`;
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}
