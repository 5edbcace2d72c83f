/**
 * Remote verbs: `imago image create|upload|import|list|show|download|update|delete|disable|enable|get`.
 * They talk to a server over the REST API (--server / IMAGO_URL).
 */
import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Command } from 'commander';
import type { ImageJson } from '../api/rest/image-json.js';
import type { ImagoClient } from './client.js';
import { ApiError } from './client.js';
import { humanBytes, toJson } from './json.js';
import { percentBar, progressBar } from './progress-bar.js';
import { RESUMABLE_THRESHOLD, resumableUpload, savedUpload } from './resumable-upload.js';

type Out = 'table' | 'json';

interface Common {
  server?: string;
  token?: string;
  data?: string;
  output?: Out;
}

export interface RemoteContext {
  client(opts: { server?: string; token?: string; data?: string }): ImagoClient;
  setExit(code: number): void;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function keyValues(pairs: string[] | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new ApiError(0, 'USAGE', `${what} "${p}" must be key=value`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

interface AttrFlags {
  name?: string;
  description?: string;
  type?: string;
  diskFormat?: string;
  containerFormat?: string;
  architecture?: string;
  osDistro?: string;
  osVersion?: string;
  osType?: string;
  minDisk?: string;
  minRam?: string;
  persistent?: boolean;
  property?: string[];
  tag?: string[];
}

function attributes(f: AttrFlags): Record<string, unknown> {
  const a: Record<string, unknown> = {};
  for (const k of ['name', 'description', 'type', 'diskFormat', 'containerFormat', 'architecture', 'osDistro', 'osVersion', 'osType'] as const) {
    if (f[k] !== undefined) a[k] = f[k];
  }
  if (f.minDisk !== undefined) a.minDisk = Number(f.minDisk);
  if (f.minRam !== undefined) a.minRam = Number(f.minRam);
  if (f.persistent !== undefined) a.persistent = f.persistent;
  if (f.property?.length) a.properties = keyValues(f.property, '--property');
  if (f.tag?.length) a.tags = f.tag;
  return a;
}

function withAttributeOptions(c: Command): Command {
  return c
    .option('--description <text>')
    .option('--type <type>', 'OS, CDROM, DATABLOCK, KERNEL, RAMDISK, CONTEXT')
    .option('--disk-format <format>', 'raw, qcow2, vmdk, vdi, vhd, vhdx, iso, ploop, ... (detected when absent)')
    .option('--container-format <format>', 'bare, ova, ovf, docker, ...')
    .option('--architecture <arch>')
    .option('--os-distro <distro>')
    .option('--os-version <version>')
    .option('--os-type <type>')
    .option('--min-disk <GiB>')
    .option('--min-ram <MiB>')
    .option('--persistent', 'OpenNebula persistent image')
    .option('--property <key=value>', 'a property (repeatable)', collect)
    .option('--tag <tag>', 'a tag (repeatable)', collect);
}

export function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => (c ?? '').padEnd(widths[i]!))
          .join('   ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** Deckhouse's `d8 k get vi` columns. */
export const WATCH_HEADER = ['NAME', 'PHASE', 'PROGRESS', 'STOREDSIZE', 'UNPACKEDSIZE', 'AGE'];
export function watchRow(i: ImageJson): string[] {
  const progress = i.state === 'ready' ? '100%' : i.progress !== undefined && i.progress !== null ? `${i.progress}%` : '';
  return [
    i.name ?? '',
    i.deckhousePhase,
    progress,
    i.storedSize !== undefined ? humanBytes(i.storedSize) : '',
    i.virtualSize !== undefined ? humanBytes(i.virtualSize) : '',
    age(i.createdAt),
  ];
}

function printImages(images: ImageJson[], output: Out | undefined): void {
  if (output === 'json') {
    process.stdout.write(toJson(images, 2) + '\n');
    return;
  }
  const rows = [['ID', 'NAME', 'PROJECT', 'VISIBILITY', 'STATE', 'FORMAT', 'VIRTUAL', 'STORED', 'AGE']];
  for (const i of images) {
    rows.push([
      i.id,
      i.name ?? '',
      String(i.project ?? '(cluster)'),
      String(i.visibility ?? ''),
      i.state,
      String(i.diskFormat ?? ''),
      humanBytes(i.virtualSize),
      humanBytes(i.storedSize),
      age(i.createdAt),
    ]);
  }
  process.stdout.write(table(rows));
}

export function printImage(i: ImageJson, output: Out | undefined): void {
  if (output === 'json') {
    process.stdout.write(toJson(i, 2) + '\n');
    return;
  }
  const rows: [string, string][] = [
    ['id', i.id],
    ['name', i.name ?? '(none)'],
    ['state', `${i.state}${i.stateReason ? ` (${i.stateReason})` : ''}`],
    ['glance / opennebula / deckhouse', `${i.glanceStatus} / ${i.openNebulaState} / ${i.deckhousePhase}`],
    ['project', String(i.project ?? '(cluster scope)')],
    ['owner', String(i.owner ?? '')],
    ['visibility', String(i.visibility ?? '')],
    ['permissions', `${String(i.permissions ?? '')} ${String(i.permissionsText ?? '')}`],
    ['type', String(i.type ?? '')],
    ['disk format', String(i.diskFormat ?? '')],
    ['container format', String(i.containerFormat ?? '')],
    ['virtual size', i.virtualSize !== undefined ? `${humanBytes(i.virtualSize)} (${i.virtualSize} bytes)` : ''],
    ['stored size', i.storedSize !== undefined ? `${humanBytes(i.storedSize)} (${i.storedSize} bytes)` : ''],
    ['digest', i.digest ?? ''],
    ['created', i.createdAt],
    ['updated', i.updatedAt],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n');
}

export function registerImageCommands(program: Command, ctx: RemoteContext): void {
  const image = program.command('image').description('manage images on an Imago server (--server URL or IMAGO_URL)');
  const remote = (c: Command) =>
    c
      .option('--server <url>', 'Imago server (default IMAGO_URL or http://127.0.0.1:9393)')
      .option('--token <token>', 'API token (default IMAGO_TOKEN, else <data>/admin.token of a local server)')
      .option('--data <dir>', 'local data dir whose admin.token to use (default IMAGO_DATA or ./imago-data)')
      .option('-o, --output <format>', 'table or json', 'table');
  const run =
    <A extends unknown[]>(fn: (...args: A) => Promise<void>) =>
    async (...args: A) => {
      try {
        await fn(...args);
      } catch (e) {
        if (e instanceof ApiError) {
          process.stderr.write(`imago: ${e.message}${e.code && e.code !== 'HTTP_ERROR' ? ` [${e.code}]` : ''}\n`);
          ctx.setExit(e.code === 'UNSAFE_IMAGE' ? 1 : 2);
          return;
        }
        throw e;
      }
    };

  withAttributeOptions(remote(image.command('create').description('create an image, optionally uploading a file or importing a URL')))
    .requiredOption('--name <name>')
    .option('--project <project>', 'owning project (default: your only project)')
    .option('--cluster', 'cluster scope: readable by every project (server admins)')
    .option('--visibility <v>', 'private, project (default), shared or public')
    .option('--file <path>', 'upload this file')
    .option(
      '--resumable',
      `with --file: upload through the resumable (tus) endpoint even when smaller than ${RESUMABLE_THRESHOLD / 1048576} MiB (larger files always are)`,
    )
    .option('--resume', 'with --file: continue the upload of this file that an earlier, interrupted run started (same path, size and mtime)')
    .option(
      '--limit-rate <rate>',
      'with --file: send at most this many bytes per second (k, M, G suffixes), as curl --limit-rate; uploads through the resumable endpoint',
    )
    .option('--url <url>', 'import from this URL (the server downloads it); waits until it is ready, with progress')
    .option('--no-wait', 'with --url: return once the server has started the import')
    .option('--idempotency-key <key>', 'retry-safe creation (default: a random key per invocation)')
    .action(
      run(
        async (
          f: AttrFlags &
            Common &
            UploadFlags & { file?: string; url?: string; wait: boolean; idempotencyKey?: string; project?: string; cluster?: boolean; visibility?: string },
        ) => {
          if (f.file && f.url) throw new ApiError(0, 'USAGE', 'give --file or --url, not both');
          if (f.file) await checkUploadFile(f.file);
          const c = ctx.client(f);
          // --resume: the image the interrupted run created is the one to continue
          const saved = f.file && f.resume ? await savedUpload(c.baseUrl, f.file) : undefined;
          if (saved && f.file) {
            printImage(await uploadFile(c, saved.imageId, f.file, f), f.output);
            return;
          }
          const attrs = attributes(f);
          if (f.cluster) attrs.project = null;
          else if (f.project) attrs.project = f.project;
          if (f.visibility) attrs.visibility = f.visibility;
          let img = await c.create(attrs, f.idempotencyKey ?? randomUUID());
          try {
            if (f.file) img = await uploadFile(c, img.id, f.file, f);
            else if (f.url) img = await importWithBar(c, img, f.url, f.wait);
          } catch (e) {
            // an interrupted resumable upload keeps its image and its received bytes: --resume goes on
            if (e instanceof ApiError && e.code === 'UNREACHABLE' && f.file && (await isResumable(f.file, f))) throw e;
            throw await withoutHalfMadeImage(c, img, e, f.file ? `image upload ${img.id} ${f.file}` : `image import ${img.id} ${f.url}`);
          }
          printImage(img, f.output);
        },
      ),
    );

  remote(image.command('upload').description('upload a file into an image').argument('<image>').argument('<file>'))
    .option('--resumable', `upload through the resumable (tus) endpoint even when smaller than ${RESUMABLE_THRESHOLD / 1048576} MiB (larger files always are)`)
    .option('--resume', 'continue the upload of this file that an earlier, interrupted run started (same path, size and mtime)')
    .option('--limit-rate <rate>', 'send at most this many bytes per second (k, M, G suffixes), as curl --limit-rate; uploads through the resumable endpoint')
    .action(
      run(async (id: string, file: string, f: Common & UploadFlags) => {
        await checkUploadFile(file);
        const c = ctx.client(f);
        printImage(await uploadFile(c, (await c.resolve(id)).id, file, f), f.output);
      }),
    );

  remote(
    image
      .command('import')
      .description('import an image from a URL (server-side); waits until it is ready, with progress')
      .argument('<image>')
      .argument('<url>'),
  )
    .option('--no-wait', 'return once the server has started the import')
    .action(
      run(async (id: string, url: string, f: Common & { wait: boolean }) => {
        const c = ctx.client(f);
        printImage(await importWithBar(c, await c.resolve(id), url, f.wait), f.output);
      }),
    );

  remote(image.command('list').description('list images'))
    .option('--name <name>', 'exact name or prefix*')
    .option('--state <state>', 'filter by state (repeatable)', collect)
    .option('--type <type>', 'filter by type (repeatable)', collect)
    .option('--disk-format <format>', 'filter by disk format (repeatable)', collect)
    .option('--tag <tag>', 'filter by tag (repeatable)', collect)
    .option('--property <key=value>', 'filter by property (repeatable)', collect)
    .option('--sort <key[:dir]>', 'name|createdAt|updatedAt|storedSize|virtualSize')
    .option('--project <project>', "only this project's images")
    .option('--visibility <v>', 'filter by visibility (repeatable)', collect)
    .option('--member-status <status>', 'images offered to your projects: pending, accepted or rejected')
    .option('--limit <n>', 'page size', '100')
    .option('--all', 'follow pages to the end')
    .action(
      run(
        async (
          f: Common & {
            name?: string;
            state?: string[];
            type?: string[];
            diskFormat?: string[];
            tag?: string[];
            property?: string[];
            sort?: string;
            limit: string;
            all?: boolean;
            project?: string;
            visibility?: string[];
            memberStatus?: string;
          },
        ) => {
          const c = ctx.client(f);
          const q: Record<string, string | string[]> = { limit: f.limit };
          if (f.project) q.project = f.project;
          if (f.visibility) q.visibility = f.visibility;
          if (f.memberStatus) q.memberStatus = f.memberStatus;
          if (f.name) q.name = f.name;
          if (f.state) q.state = f.state;
          if (f.type) q.type = f.type;
          if (f.diskFormat) q.diskFormat = f.diskFormat;
          if (f.tag) q.tag = f.tag;
          if (f.property) q.property = f.property;
          if (f.sort) q.sort = f.sort;
          const all: ImageJson[] = [];
          for (let page = 0; page < 100_000; page++) {
            const r = await c.list(q);
            all.push(...r.images);
            if (!f.all || !r.nextCursor) break;
            q.cursor = r.nextCursor;
          }
          printImages(all, f.output);
        },
      ),
    );

  remote(image.command('show').description('show an image').argument('<image>', 'id or name')).action(
    run(async (id: string, f: Common) => {
      printImage(await ctx.client(f).resolve(id), f.output);
    }),
  );

  remote(
    image
      .command('download')
      .description('download an image, as stored or converted by the server to another format')
      .argument('<image>')
      .requiredOption('-O, --out <file>', 'where to write it'),
  )
    .option('--format <format>', 'raw, qcow2, vmdk, vhd, vhdx or vdi (default: as stored)')
    .option('--subformat <subformat>', 'with --format: e.g. streamOptimized (vmdk), fixed (vhd)')
    .option('--options <k=v,...>', 'with --format: writer options as qemu-img -o spells them, e.g. compress=on')
    .action(
      run(async (id: string, f: Common & { out: string; format?: string; subformat?: string; options?: string }) => {
        if (!f.format && (f.subformat !== undefined || f.options !== undefined)) throw new ApiError(0, 'USAGE', '--subformat and --options need --format');
        const c = ctx.client(f);
        const img = await c.resolve(id);
        const bar = progressBar(`download ${img.name}`);
        try {
          const n = await c.download(img.id, f.out, bar.update, f.format ? { format: f.format, subformat: f.subformat, options: f.options } : undefined);
          bar.end();
          process.stderr.write(`${f.out}: ${n} bytes${f.format ? ` (${f.format})` : ''}\n`);
        } catch (e) {
          bar.end();
          throw e;
        }
      }),
    );

  withAttributeOptions(remote(image.command('update').description('update image metadata').argument('<image>')))
    .option('--name <name>', 'new name')
    .option('--visibility <v>', 'private, project, shared, community or public (admins)')
    .action(
      run(async (id: string, f: AttrFlags & Common & { visibility?: string }) => {
        const c = ctx.client(f);
        const patch = attributes(f);
        if (f.visibility) patch.visibility = f.visibility;
        printImage(await c.update((await c.resolve(id)).id, patch), f.output);
      }),
    );

  remote(
    image
      .command('chmod')
      .description('set OpenNebula-style permissions: owner/group/other × use(4) manage(2) admin(1), e.g. 640')
      .argument('<image>')
      .argument('<mode>'),
  ).action(
    run(async (id: string, mode: string, f: Common) => {
      const c = ctx.client(f);
      printImage(await c.request<ImageJson>('PUT', `/api/v1/images/${encodeURIComponent((await c.resolve(id)).id)}/permissions`, { mode }), f.output);
    }),
  );

  for (const action of ['disable', 'enable'] as const) {
    remote(image.command(action).description(`${action} an image`).argument('<image>')).action(
      run(async (id: string, f: Common) => {
        const c = ctx.client(f);
        printImage(await c.action((await c.resolve(id)).id, action), f.output);
      }),
    );
  }

  remote(image.command('delete').description('delete an image').argument('<image>')).action(
    run(async (id: string, f: Common) => {
      const c = ctx.client(f);
      const img = await c.resolve(id);
      await c.delete(img.id);
      process.stdout.write(`deleted ${img.id} (${img.name})\n`);
    }),
  );

  remote(image.command('get').description("show an image like Deckhouse's d8 k get vi; -w watches changes").argument('<image>'))
    .option('-w, --watch', 'print a row per change until interrupted')
    .action(
      run(async (id: string, f: Common & { watch?: boolean }) => {
        const c = ctx.client(f);
        const img = await c.resolve(id);
        if (f.output === 'json') process.stdout.write(toJson(img) + '\n');
        else process.stdout.write(table([WATCH_HEADER, watchRow(img)]));
        if (!f.watch) return;
        const widths = WATCH_HEADER.map((h, i) => Math.max(h.length, (watchRow(img)[i] ?? '').length));
        for await (const ev of await c.events(img.id)) {
          if (f.output === 'json') process.stdout.write(toJson(ev.image) + '\n');
          else {
            const row = watchRow(ev.image);
            process.stdout.write(
              row
                .map((cell, i) => cell.padEnd(Math.max(widths[i]!, cell.length)))
                .join('   ')
                .trimEnd() + '\n',
            );
          }
          if (ev.type === 'deleted') break;
        }
      }),
    );
}

/**
 * Refuses, before anything is created on the server, a file an upload could not send: missing,
 * unreadable, a directory, or empty.
 */
export async function checkUploadFile(file: string): Promise<number> {
  let fh;
  try {
    fh = await open(file, constants.O_RDONLY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (e as Error).message;
    throw new ApiError(0, 'USAGE', `cannot upload "${file}": ${why}; give the path of a disk image file you can read`);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new ApiError(0, 'USAGE', `cannot upload "${file}": it is a directory; give the path of a disk image file`);
    if (!st.isFile()) throw new ApiError(0, 'USAGE', `cannot upload "${file}": it is not a regular file; give the path of a disk image file`);
    if (st.size === 0) throw new ApiError(0, 'USAGE', `cannot upload "${file}": it is empty (0 bytes); give the path of a disk image file`);
    return st.size;
  } finally {
    await fh.close();
  }
}

/**
 * After the first upload or import of an image this command created failed: the image holds no
 * bytes (a failed ingest never commits any), so it is deleted rather than left `pending` or
 * `error`. When that is not possible, the error says how to retry into it or delete it.
 */
async function withoutHalfMadeImage(c: ImagoClient, created: ImageJson, failure: unknown, retry: string): Promise<unknown> {
  if (!(failure instanceof ApiError)) return failure;
  try {
    const now = await c.get(created.id);
    if (now.digest === undefined) {
      await c.delete(created.id);
      return new ApiError(failure.status, failure.code, `${failure.message} (the new image "${created.name}" stored nothing and was removed)`);
    }
  } catch {
    // the server is unreachable or refuses the delete: say how to go on
  }
  return new ApiError(
    failure.status,
    failure.code,
    `${failure.message}; the image ${created.id} was created: retry with "./bin/imago.js ${retry}" or remove it with "./bin/imago.js image delete ${created.id}"`,
  );
}

/**
 * Starts a URL import and, with `wait`, follows it with a progress bar until it ends. An import
 * that ends other than ready is an error carrying the server's reason: UNSAFE_IMAGE (exit 1, as
 * for a refused upload) when the bytes were inspected and refused, IMPORT_FAILED otherwise.
 */
async function importWithBar(c: ImagoClient, img: ImageJson, url: string, wait: boolean): Promise<ImageJson> {
  const bar = percentBar(`import ${img.name}`);
  let last: ImageJson;
  try {
    last = await c.importAndWait(img.id, url, { wait, onChange: (i) => bar.update(i.state, i.progress ?? undefined) });
  } finally {
    bar.end();
  }
  if (!wait || last.state === 'ready') return last;
  const reason = last.state === 'error' ? (last.stateReason ?? 'the server gave no reason') : `it stopped in state ${last.state}`;
  throw new ApiError(0, last.state === 'error' && last.inspection ? 'UNSAFE_IMAGE' : 'IMPORT_FAILED', `the import of "${img.name}" failed: ${reason}`);
}

interface UploadFlags {
  resumable?: boolean;
  resume?: boolean;
  limitRate?: string;
}

async function isResumable(file: string, f: UploadFlags): Promise<boolean> {
  return f.resumable === true || f.resume === true || f.limitRate !== undefined || (await checkUploadFile(file)) >= RESUMABLE_THRESHOLD;
}

/** One PUT for small files; the resumable endpoint for large ones (or when asked), retrying by itself. */
async function uploadFile(c: ImagoClient, id: string, file: string, f: UploadFlags): Promise<ImageJson> {
  if (!(await isResumable(file, f))) return uploadWithBar(c, id, file);
  const bar = progressBar(`upload ${file}`);
  try {
    return await resumableUpload(c, id, file, f.resume === true, {
      progress: bar.update,
      say: (line) => process.stderr.write(`${line}\n`),
      limitRate: f.limitRate === undefined ? undefined : parseRate(f.limitRate),
    });
  } finally {
    bar.end();
  }
}

function parseRate(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)$/i.exec(s.trim());
  const n = m ? Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase()) : NaN;
  if (!m || !(n >= 1024)) throw new ApiError(0, 'USAGE', `--limit-rate "${s}" is not a rate of at least 1k bytes per second (e.g. 500k, 10M)`);
  return Math.floor(n);
}

async function uploadWithBar(c: ImagoClient, id: string, file: string): Promise<ImageJson> {
  const bar = progressBar(`upload ${file}`);
  try {
    return await c.upload(id, file, bar.update);
  } finally {
    bar.end();
  }
}
