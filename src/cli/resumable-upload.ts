/**
 * The CLI's resumable upload: the server's tus endpoint (`/api/v1/uploads`, tus 1.0.0) for large
 * files. A dropped connection is retried by itself (HEAD for the server's offset, PATCH from
 * there), with a line on stderr for each retry; the upload's URL is kept in a small state file
 * keyed by the file's path, size and mtime, so `--resume` continues after the CLI itself was
 * killed. The bytes are sent once: a retry starts where the server's durable offset is.
 *
 * State files: `$XDG_STATE_HOME/imago/uploads/<sha256 of server, path, size, mtime>.json`
 * (default `~/.local/state/...`), removed when the upload ends (ready or refused).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, realpath, rm, stat, writeFile, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { ImageJson } from '../api/rest/image-json.js';
import { ApiError, apiError, type ImagoClient, type Progress } from './client.js';

/** files at least this large go through tus (smaller ones: one PUT) */
export const RESUMABLE_THRESHOLD = 64 * 1024 * 1024;
/** consecutive failed attempts (no byte gained) before giving up */
const MAX_ATTEMPTS = 10;

export interface ResumeState {
  server: string;
  imageId: string;
  /** absolute URL of the tus upload */
  uploadUrl: string;
  file: string;
  size: number;
  mtimeMs: number;
  createdAt: string;
}

export interface ResumableOptions {
  progress?: Progress;
  /** a line for the user (retries) */
  say: (line: string) => void;
  /** bytes per second at most (`--limit-rate`) */
  limitRate?: number;
}

function stateDir(): string {
  return join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'imago', 'uploads');
}

async function fileKey(server: string, file: string): Promise<{ key: string; path: string; size: number; mtimeMs: number }> {
  const path = await realpath(file);
  const st = await stat(path);
  const key = createHash('sha256').update(`${server}\0${path}\0${st.size}\0${st.mtimeMs}`).digest('hex').slice(0, 32);
  return { key, path, size: st.size, mtimeMs: st.mtimeMs };
}

/** The saved upload of `file` to `server` (same path, size and mtime), if any. */
export async function savedUpload(server: string, file: string): Promise<ResumeState | undefined> {
  const { key } = await fileKey(server, file);
  try {
    return JSON.parse(await readFile(join(stateDir(), `${key}.json`), 'utf8')) as ResumeState;
  } catch {
    return undefined;
  }
}

async function saveState(key: string, s: ResumeState): Promise<void> {
  await mkdir(stateDir(), { recursive: true, mode: 0o700 });
  const path = join(stateDir(), `${key}.json`);
  await writeFile(`${path}.tmp`, JSON.stringify(s), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

const TUS = { 'tus-resumable': '1.0.0' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Uploads `file` into image `imageId` through tus; with `resume`, continues the saved upload of
 * this file when there is one. Returns the image once the server's verdict is in.
 */
export async function resumableUpload(c: ImagoClient, imageId: string, file: string, resume: boolean, opts: ResumableOptions): Promise<ImageJson> {
  const { key, path, size, mtimeMs } = await fileKey(c.baseUrl, file);
  const statePath = join(stateDir(), `${key}.json`);
  let state = resume ? await savedUpload(c.baseUrl, file) : undefined;
  if (state && state.imageId !== imageId) state = undefined;
  let offset: number | undefined;
  if (state) {
    offset = await headOffset(c, state.uploadUrl).catch(() => undefined);
    if (offset === undefined) {
      opts.say(`imago: the saved upload ${state.uploadUrl} is gone on the server; starting over`);
      state = undefined;
    } else {
      opts.say(`imago: resuming the upload of ${file} at ${offset} of ${size} bytes`);
    }
  }
  if (!state) {
    const res = await tusFetch(c, `${c.baseUrl}/api/v1/uploads`, {
      method: 'POST',
      headers: {
        ...TUS,
        'upload-length': String(size),
        'upload-metadata': `image_id ${b64(imageId)},filename ${b64(path.split('/').pop()!)}`,
      },
    });
    if (res.status !== 201) await fail(res);
    state = {
      server: c.baseUrl,
      imageId,
      uploadUrl: new URL(res.headers.get('location')!, c.baseUrl).href,
      file: path,
      size,
      mtimeMs,
      createdAt: new Date().toISOString(),
    };
    await saveState(key, state);
    offset = 0;
  }
  let failures = 0;
  for (;;) {
    if (offset === undefined) {
      try {
        offset = await headOffset(c, state.uploadUrl);
      } catch (e) {
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          await rm(statePath, { force: true });
          throw e;
        }
        failures = await retry(opts, failures, offset, size, e);
        continue;
      }
    }
    const from = offset;
    let sent = from;
    const body = Readable.from(
      paced(createReadStream(path, { start: from, highWaterMark: 1024 * 1024 }), opts.limitRate, (n) => {
        sent += n;
        opts.progress?.(sent, size);
      }),
    );
    let res: Response;
    try {
      res = await fetch(state.uploadUrl, {
        method: 'PATCH',
        headers: c.authHeaders({ ...TUS, 'upload-offset': String(from), 'content-type': 'application/offset+octet-stream' }),
        body: body as unknown as ReadableStream,
        duplex: 'half',
      } as RequestInit);
    } catch (e) {
      offset = undefined;
      failures = await retry(opts, failures, from, size, e);
      continue;
    }
    if (res.status === 204) {
      await res.arrayBuffer();
      await rm(statePath, { force: true });
      return c.get(imageId);
    }
    if (res.status === 409 || res.status >= 500) {
      // another offset (a part the server had not made durable), or a server in trouble: ask again
      await res.arrayBuffer().catch(() => undefined);
      offset = undefined;
      failures = await retry(opts, failures, from, size, new Error(`HTTP ${res.status}`));
      continue;
    }
    // a refusal (the verdict, a quota, an expired upload): final; the saved state is of no use
    await rm(statePath, { force: true });
    await fail(res);
  }
}

async function retry(opts: ResumableOptions, failures: number, at: number | undefined, size: number, e: unknown): Promise<number> {
  const n = failures + 1;
  const why = e instanceof Error ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e);
  if (n > MAX_ATTEMPTS) {
    throw new ApiError(0, 'UNREACHABLE', `the upload failed ${MAX_ATTEMPTS} times in a row (${why}); run the same command with --resume to continue it`);
  }
  const wait = Math.min(30_000, 500 * 2 ** (n - 1));
  opts.say(
    `\nimago: connection lost${at !== undefined ? ` (${at} of ${size} bytes sent)` : ''}: ${why}; retrying in ${(wait / 1000).toFixed(1)} s (attempt ${n}/${MAX_ATTEMPTS})`,
  );
  await sleep(wait);
  return n;
}

async function headOffset(c: ImagoClient, url: string): Promise<number> {
  const res = await tusFetch(c, url, { method: 'HEAD', headers: TUS });
  if (res.status !== 200) await fail(res);
  const o = Number(res.headers.get('upload-offset'));
  if (!Number.isSafeInteger(o)) throw new ApiError(res.status, 'HTTP_ERROR', `the server's answer has no Upload-Offset`);
  return o;
}

async function tusFetch(c: ImagoClient, url: string, init: { method: string; headers: Record<string, string> }): Promise<Response> {
  return fetch(url, { method: init.method, headers: c.authHeaders(init.headers) });
}

async function fail(res: Response): Promise<never> {
  throw apiError(res.status, await res.text().catch(() => ''));
}

/** The file's chunks, at most `rate` bytes per second when given, counted as they go. */
async function* paced(src: AsyncIterable<Buffer>, rate: number | undefined, count: (n: number) => void): AsyncGenerator<Buffer> {
  const start = Date.now();
  let n = 0;
  for await (const chunk of src) {
    if (rate !== undefined) {
      // send in pieces of a tenth of a second's worth, each when its time has come
      const piece = Math.max(1024, Math.floor(rate / 10));
      for (let off = 0; off < chunk.length; off += piece) {
        const part = chunk.subarray(off, off + piece);
        const due = start + ((n + part.length) * 1000) / rate;
        if (due > Date.now()) await sleep(due - Date.now());
        n += part.length;
        count(part.length);
        yield part;
      }
    } else {
      n += chunk.length;
      count(chunk.length);
      yield chunk;
    }
  }
}

function b64(s: string): string {
  return Buffer.from(s).toString('base64');
}
