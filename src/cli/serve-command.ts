/** `imago serve` and `imago gc`: run the service on the embedded default (or configured backends). */
import type { Command } from 'commander';
import { loadConfig, type ConfigFlags } from '../config.js';
// ../app.js (Fastify, the database drivers, jose, ...) is imported inside the actions that need it,
// so local verbs (convert, compare, inspect) and remote ones start without loading the server.
type AppModule = typeof import('../app.js');
const loadApp = (): Promise<AppModule> => import('../app.js');
import { humanBytes, toJson } from './json.js';

const withServerOptions = (c: Command) =>
  c
    .option('--data <dir>', 'data directory: SQLite catalog and blobs (default IMAGO_DATA or ./imago-data)')
    .option('--database <url>', 'catalog database URL: sqlite:PATH or postgres://... (default IMAGO_DATABASE_URL)')
    .option('--max-image-size <bytes>', 'largest image stored, e.g. 500G (default 1T)')
    .option('--max-virtual-size <bytes>', 'largest virtual size accepted (default 64T)');

export function registerServe(program: Command, setExit: (code: number) => void): void {
  withServerOptions(program.command('serve').description('run the Imago service (REST API under /api/v1)'))
    .option('--listen <host:port>', 'address to listen on (default IMAGO_LISTEN or 127.0.0.1:9393)')
    .option('--md5', 'also compute md5 checksums (Glance "checksum"); costs as much CPU as the rest')
    .option('--os-hash-algo <algo>', 'the hash the Glance door shows as os_hash_algo: sha512 (default) or sha256')
    .option('--import-allow <list>', 'hosts, IPs or CIDR ranges URL imports may reach despite the private-address rule')
    .option('--gc-schedule <cron>', 'collect unreferenced blobs on this cron schedule, e.g. "0 3 * * *"')
    .option('--convert-to <format>', 'store every upload/import in this format (raw, qcow2, vmdk, vhd, vhdx, vdi), keeping the original as a variant')
    .option('--quiet', 'no request log')
    .action(async (flags: ConfigFlags & { quiet?: boolean }) => {
      const config = loadConfig(flags);
      const { startApp, enableMemoryRelief } = await loadApp();
      enableMemoryRelief();
      const app = await startApp(config, { logger: !flags.quiet });
      process.stderr.write(
        `imago: serving ${app.url}/api/v1 (data ${config.dataDir}, catalog ${config.databaseUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@')})\n` +
          `imago: web console at ${app.url}/ (sign in with a token)\n`,
      );
      if (app.bootstrapToken) {
        process.stderr.write(
          `imago: first start — server-admin token (shown once; also in ${config.dataDir}/admin.token, mode 0600; the CLI on this machine uses it by itself):\n  ${app.bootstrapToken}\n`,
        );
      }
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await app.close();
      setExit(0);
    });

  withServerOptions(program.command('gc').description('reclaim blobs that no image, variant, OCI repository, manifest or open upload references'))
    .option('--check', 'only report total/used/reclaimable bytes and the blobs that would be deleted')
    .option('--json', 'machine-readable output')
    .action(async (flags: ConfigFlags & { check?: boolean; json?: boolean }) => {
      const config = loadConfig(flags);
      const { createApp } = await loadApp();
      const app = await createApp(config);
      try {
        const r = await app.gc({ dryRun: flags.check === true });
        if (flags.json) {
          process.stdout.write(
            toJson({
              ...r.plan,
              candidates: r.plan.candidates.map((b) => ({ ...b, committedAt: b.committedAt.toISOString() })),
              deleted: r.deleted,
              resumableUploads: r.resumable,
            }) + '\n',
          );
        } else {
          const p = r.plan;
          process.stdout.write(`total:        ${humanBytes(p.totalBytes)} (${p.totalBytes} bytes)\n`);
          process.stdout.write(`used:         ${humanBytes(p.usedBytes)} (${p.usedBytes} bytes)\n`);
          process.stdout.write(`reclaimable:  ${humanBytes(p.reclaimableBytes)} (${p.reclaimableBytes} bytes)\n`);
          process.stdout.write(
            `held back:    ${humanBytes(p.youngBytes)} (${p.youngBytes} bytes) by the ${duration(p.graceMs)} grace period (IMAGO_GC_GRACE_MS)\n`,
          );
          if (p.youngReclaimableFrom && p.youngReclaimableBy) {
            const when = (d: Date) => `${d.toISOString().replace(/\.\d+Z$/, 'Z')} (in ${duration(d.getTime() - Date.now())})`;
            process.stdout.write(
              p.youngReclaimableFrom.getTime() === p.youngReclaimableBy.getTime()
                ? `              reclaimable from ${when(p.youngReclaimableBy)}, if still unreferenced\n`
                : `              reclaimable from ${when(p.youngReclaimableFrom)}, all of it by ${when(p.youngReclaimableBy)}, if still unreferenced\n`,
            );
          }
          if (r.resumable.count > 0) {
            process.stdout.write(
              `uploading:    ${humanBytes(r.resumable.bytes)} (${r.resumable.bytes} bytes) received by ${r.resumable.count} resumable upload(s) in flight (kept; they expire after IMAGO_UPLOAD_TTL)\n`,
            );
          }
          for (const b of p.candidates) process.stdout.write(`  ${flags.check ? 'would delete' : 'deleted'} ${b.digest} ${humanBytes(b.sizeBytes)}\n`);
          if (r.deleted) process.stdout.write(`deleted ${r.deleted.count} blob(s), ${humanBytes(r.deleted.bytes)}\n`);
        }
        setExit(0);
      } finally {
        await app.close();
      }
    });

  withServerOptions(
    program
      .command('admin-token')
      .description(
        'recovery: mint a new server-admin token straight into the catalog and <data>/admin.token (needs access to the data dir and database, not to the API)',
      ),
  ).action(async (flags: ConfigFlags) => {
    const config = loadConfig(flags);
    const { createApp, writeAdminToken } = await loadApp();
    const app = await createApp(config);
    try {
      const { id, path } = await writeAdminToken(app, 'recovery');
      process.stderr.write(
        `imago: new server-admin token ${id} written to ${path} (mode 0600); revoke lost ones with "./bin/imago.js token list" / "./bin/imago.js token revoke"\n`,
      );
      setExit(0);
    } finally {
      await app.close();
    }
  });
}

/** 5400000 → "1h30m", 90000 → "1m30s", 0 → "0s": a duration as a person reads it. */
export function duration(ms: number): string {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const parts: string[] = [];
  for (const [unit, n] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (s >= n) {
      parts.push(`${Math.floor(s / n)}${unit}`);
      s %= n;
    }
  }
  if (s > 0 || parts.length === 0) parts.push(`${s}s`);
  return parts.join('');
}
