/**
 * The REST client the remote CLI verbs use (global fetch; no SQL, no domain imports). Errors
 * come back as ApiError carrying the server's problem+json code and message.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { stat, rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ImageJson } from '../api/rest/image-json.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type Progress = (done: number, total?: number) => void;

export class ImagoClient {
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  /** `extra` with this client's credentials (for requests it does not make itself: tus). */
  authHeaders(extra: Record<string, string> = {}): Record<string, string> {
    return this.headers(extra);
  }

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: this.headers(body === undefined ? headers : { 'content-type': 'application/json', ...headers }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw unreachable(this.baseUrl, e);
    }
    return this.parse<T>(res);
  }

  private async parse<T>(res: Response): Promise<T> {
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    if (!res.ok) throw apiError(res.status, text);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  create(attrs: Record<string, unknown>, idempotencyKey?: string): Promise<ImageJson> {
    return this.request('POST', '/api/v1/images', attrs, idempotencyKey ? { 'idempotency-key': idempotencyKey } : {});
  }

  list(query: Record<string, string | string[]> = {}): Promise<{ images: ImageJson[]; nextCursor?: string }> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) qs.append(k, x);
    const s = qs.toString();
    return this.request('GET', `/api/v1/images${s ? `?${s}` : ''}`);
  }

  get(id: string): Promise<ImageJson> {
    return this.request('GET', `/api/v1/images/${encodeURIComponent(id)}`);
  }

  /** An image by id, or by exact name when exactly one image has it. */
  async resolve(idOrName: string): Promise<ImageJson> {
    if (/^[0-9a-f-]{36}$/i.test(idOrName)) {
      try {
        return await this.get(idOrName);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) throw e;
      }
    }
    const { images } = await this.list({ name: idOrName, limit: '2' });
    if (images.length === 1) return images[0]!;
    if (images.length === 0) throw new ApiError(404, 'IMAGE_NOT_FOUND', `no image with id or name "${idOrName}"; list them with "./bin/imago.js image list"`);
    throw new ApiError(409, 'AMBIGUOUS', `more than one image is named "${idOrName}"; use its id`);
  }

  update(id: string, patch: Record<string, unknown>): Promise<ImageJson> {
    return this.request('PATCH', `/api/v1/images/${encodeURIComponent(id)}`, patch);
  }

  delete(id: string): Promise<void> {
    return this.request('DELETE', `/api/v1/images/${encodeURIComponent(id)}`);
  }

  action(id: string, action: 'disable' | 'enable'): Promise<ImageJson> {
    return this.request('POST', `/api/v1/images/${encodeURIComponent(id)}/${action}`);
  }

  startImport(id: string, url: string): Promise<ImageJson> {
    return this.request('POST', `/api/v1/images/${encodeURIComponent(id)}/import`, { url });
  }

  async upload(id: string, file: string, progress?: Progress): Promise<ImageJson> {
    const size = (await stat(file)).size;
    let done = 0;
    const body = (async function* () {
      for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
        done += (chunk as Buffer).length;
        progress?.(done, size);
        yield chunk as Buffer;
      }
    })();
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}/api/v1/images/${encodeURIComponent(id)}/file`, {
        method: 'PUT',
        headers: this.headers({ 'content-type': 'application/octet-stream', 'content-length': String(size) }),
        body: Readable.from(body) as unknown as ReadableStream,
        duplex: 'half',
      } as RequestInit);
    } catch (e) {
      throw new ApiError(0, 'UNREACHABLE', `upload to ${this.baseUrl} failed (${(e as Error).cause ?? (e as Error).message})`);
    }
    return this.parse<ImageJson>(res);
  }

  /**
   * Downloads to `out` via a temporary file renamed at the end: an interrupted download never looks
   * complete. `as` asks the server for another format (`GET /file?format=&subformat=&options=`).
   */
  async download(id: string, out: string, progress?: Progress, as?: { format: string; subformat?: string; options?: string }): Promise<number> {
    const qs = new URLSearchParams();
    if (as) {
      qs.set('format', as.format);
      if (as.subformat !== undefined) qs.set('subformat', as.subformat);
      if (as.options !== undefined) qs.set('options', as.options);
    }
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}/api/v1/images/${encodeURIComponent(id)}/file${qs.size ? `?${qs}` : ''}`, { headers: this.headers() });
    } catch (e) {
      throw unreachable(this.baseUrl, e);
    }
    if (!res.ok || !res.body) await this.parse(res);
    const total = Number(res.headers.get('content-length') ?? NaN);
    let done = 0;
    const tmp = `${out}.imago-partial`;
    const counted = (async function* () {
      for await (const chunk of Readable.fromWeb(res.body as never)) {
        done += (chunk as Buffer).length;
        progress?.(done, Number.isFinite(total) ? total : undefined);
        yield chunk as Buffer;
      }
    })();
    try {
      await pipeline(Readable.from(counted), createWriteStream(tmp));
      if (Number.isFinite(total) && done !== total) throw new ApiError(0, 'TRUNCATED', `download ended after ${done} of ${total} bytes; run it again`);
      await rename(tmp, out);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    return done;
  }

  /**
   * Server-sent events, parsed. Resolves once the server has answered, i.e. once it delivers every
   * later change: read the image's state after this, not before, and no change falls in between.
   */
  async events(imageId?: string, signal?: AbortSignal): Promise<AsyncIterable<ImageEvent>> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}/api/v1/events${imageId ? `?image=${encodeURIComponent(imageId)}` : ''}`, { headers: this.headers(), signal });
    } catch (e) {
      throw unreachable(this.baseUrl, e);
    }
    if (!res.ok || !res.body) await this.parse(res);
    return parseEvents(res.body as ReadableStream<Uint8Array>);
  }

  /**
   * Starts a URL import and, unless `wait` is false, follows the image until the import ends
   * (ready, error, or cancelled), reporting each change to `onChange`. The returned image is the last
   * state seen.
   */
  async importAndWait(id: string, url: string, opts: { wait: boolean; onChange?: (img: ImageJson) => void }): Promise<ImageJson> {
    if (!opts.wait) return this.startImport(id, url);
    const ac = new AbortController();
    try {
      let events = await this.events(id, ac.signal);
      let img = await this.startImport(id, url);
      opts.onChange?.(img);
      // An event stream can end or break while the import goes on (a proxy's or the server's time
      // limit, a dropped connection): follow it again, and give up only when reconnecting shows nothing new.
      for (let quietReconnects = 0; IMPORTING.has(img.state);) {
        let seen = false;
        try {
          for await (const ev of events) {
            if (ev.type === 'deleted') throw new ApiError(404, 'IMAGE_NOT_FOUND', `image ${id} was deleted while it was importing`);
            seen = true;
            img = ev.image;
            opts.onChange?.(img);
            if (!IMPORTING.has(img.state)) return img;
          }
        } catch (e) {
          if (e instanceof ApiError) throw e;
          // the connection dropped mid-stream ("terminated: other side closed"): follow it again
        }
        quietReconnects = seen ? 0 : quietReconnects + 1;
        if (quietReconnects > MAX_QUIET_RECONNECTS) {
          throw new ApiError(
            0,
            'WAIT_INTERRUPTED',
            `the server closed the event stream while image ${id} was still ${img.state}; the import goes on there: follow it with "./bin/imago.js image get ${id} -w"`,
          );
        }
        await new Promise((r) => setTimeout(r, 200 * quietReconnects));
        events = await this.events(id, ac.signal);
        img = await this.get(id);
        opts.onChange?.(img);
      }
      return img;
    } finally {
      ac.abort();
    }
  }
}

/** Event-stream reconnects in a row that deliver nothing before an import wait gives up. */
const MAX_QUIET_RECONNECTS = 3;

export interface ImageEvent {
  type: string;
  image: ImageJson;
}

/** The states an image is in while a URL import runs (it starts from pending). */
const IMPORTING = new Set(['pending', 'importing']);

function unreachable(baseUrl: string, e: unknown): ApiError {
  return new ApiError(
    0,
    'UNREACHABLE',
    `cannot reach the Imago server at ${baseUrl} (${(e as Error).cause ?? (e as Error).message}); start it with "./bin/imago.js serve" or set --server / IMAGO_URL`,
  );
}

async function* parseEvents(body: ReadableStream<Uint8Array>): AsyncIterable<ImageEvent> {
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of Readable.fromWeb(body as never)) {
    buf += decoder.decode(chunk as Buffer, { stream: true });
    let sep: number;
    while ((sep = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, sep);
      buf = buf.slice(sep + 2);
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      if (data) yield JSON.parse(data) as ImageEvent;
    }
  }
}

/** The error a failed answer stands for: its problem+json code and detail, or the status and the start of its text. */
export function apiError(status: number, text: string): ApiError {
  let code = 'HTTP_ERROR';
  let message = `HTTP ${status}: ${text.slice(0, 300)}`;
  try {
    const p = JSON.parse(text) as { code?: string; detail?: string };
    code = p.code ?? code;
    message = p.detail ?? message;
  } catch {
    // not problem+json (tus's own answers are plain text)
  }
  return new ApiError(status, code, message);
}
