/**
 * A byte source over HTTP(S) for URL imports: redirects (bounded, each hop re-checked by the URL
 * policy), the policy applied to the address actually connected to (custom DNS lookup), a size
 * limit checked before and while reading, an idle timeout that a slow but live transfer never
 * trips (there is no total-time limit), and resumption with `Range` + `If-Range` when the
 * connection drops mid-body and the server supports ranges.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { UrlNotAllowed, type UrlPolicy } from './url-policy.js';

export interface OpenUrlOptions {
  policy: UrlPolicy;
  maxRedirects?: number;
  maxBytes?: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  resumeAttempts?: number;
  signal?: AbortSignal;
}

export interface UrlSource {
  /** from Content-Length, when the server sent one */
  totalBytes?: number;
  finalUrl: string;
  /** how many times the transfer was resumed after a drop */
  resumes(): number;
  body: AsyncIterable<Uint8Array>;
}

export class HttpSourceError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'HttpSourceError';
  }
}

export async function openUrl(raw: string, opts: OpenUrlOptions): Promise<UrlSource> {
  const maxBytes = opts.maxBytes ?? Number.MAX_SAFE_INTEGER;
  const first = await follow(raw, opts, {});
  const res0 = first.res;
  const total = res0.headers['content-length'] !== undefined ? Number(res0.headers['content-length']) : undefined;
  if (total !== undefined && total > maxBytes) {
    res0.destroy();
    throw new HttpSourceError(`${first.url} is ${total} bytes, over the ${maxBytes}-byte limit for one image`);
  }
  const validator = (res0.headers.etag as string | undefined) ?? (res0.headers['last-modified'] as string | undefined);
  const rangesOk = res0.headers['accept-ranges'] === 'bytes';
  let resumes = 0;
  const finalUrl = first.url;
  async function* body(): AsyncIterable<Uint8Array> {
    let res = res0;
    let received = 0;
    for (;;) {
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          received += chunk.length;
          if (received > maxBytes) throw new HttpSourceError(`${finalUrl} sent more than the ${maxBytes}-byte limit for one image`);
          yield chunk;
        }
        if (total !== undefined && received < total) throw new Error(`connection closed after ${received} of ${total} bytes`);
        return;
      } catch (e) {
        res.destroy();
        if (opts.signal?.aborted || e instanceof HttpSourceError || e instanceof UrlNotAllowed) throw e;
        if (!rangesOk || !validator) {
          throw new HttpSourceError(`the transfer from ${finalUrl} broke after ${received} bytes (${(e as Error).message}) and the server does not support resuming (no Accept-Ranges/ETag); import again`);
        }
        if (resumes >= (opts.resumeAttempts ?? 5)) throw new HttpSourceError(`the transfer from ${finalUrl} broke ${resumes + 1} times; giving up after ${received} bytes — import again`);
        resumes++;
        const next = await follow(finalUrl, opts, { range: received, ifRange: validator });
        if (next.res.statusCode !== 206) {
          next.res.destroy();
          throw new HttpSourceError(`the server answered a resume request for ${finalUrl} with ${next.res.statusCode}, not 206: the file changed or ranges are unsupported; import again`, next.res.statusCode);
        }
        const cr = /^bytes (\d+)-/.exec(String(next.res.headers['content-range'] ?? ''));
        if (!cr || Number(cr[1]) !== received) {
          next.res.destroy();
          throw new HttpSourceError(`the server resumed ${finalUrl} at the wrong offset (${next.res.headers['content-range']}, expected ${received})`);
        }
        res = next.res;
      }
    }
  }
  const src: UrlSource = { finalUrl, resumes: () => resumes, body: body() };
  if (total !== undefined) src.totalBytes = total;
  return src;
}

async function follow(raw: string, opts: OpenUrlOptions, range: { range?: number; ifRange?: string }): Promise<{ res: IncomingMessage; url: string }> {
  let url = raw;
  const max = opts.maxRedirects ?? 5;
  for (let hop = 0; ; hop++) {
    const target = opts.policy.checkUrl(url);
    const res = await get(target, opts, range);
    const status = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
      res.destroy();
      if (hop >= max) throw new HttpSourceError(`${raw} redirects more than ${max} times; give the final URL`);
      url = new URL(res.headers.location, target).toString();
      continue;
    }
    if (status < 200 || status >= 300) {
      res.destroy();
      throw new HttpSourceError(`${target.toString()} answered HTTP ${status}; check the URL`, status);
    }
    return { res, url: target.toString() };
  }
}

function get(url: URL, opts: OpenUrlOptions, r: { range?: number; ifRange?: string }): Promise<IncomingMessage> {
  const lib = url.protocol === 'https:' ? https : http;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  // every address the name resolves to is checked, and only checked addresses are connected to
  const lookup: LookupFunction = (hostname, options, cb) => {
    dnsLookup(hostname, { all: true, family: (options as { family?: number }).family ?? 0 }, (err, addrs: LookupAddress[]) => {
      if (err) return cb(err, '', 4);
      try {
        for (const a of addrs) opts.policy.checkAddress(a.address, host);
      } catch (e) {
        return cb(e as NodeJS.ErrnoException, '', 4);
      }
      if ((options as { all?: boolean }).all) return (cb as unknown as (e: null, a: LookupAddress[]) => void)(null, addrs);
      cb(null, addrs[0]!.address, addrs[0]!.family);
    });
  };
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'user-agent': 'imago-import/0.1', accept: '*/*' };
    if (r.range !== undefined) headers.range = `bytes=${r.range}-`;
    if (r.ifRange) headers['if-range'] = r.ifRange;
    const req = lib.request(url, { method: 'GET', headers, lookup, signal: opts.signal });
    const connectTimer = setTimeout(() => req.destroy(new HttpSourceError(`could not connect to ${url.host} within ${opts.connectTimeoutMs ?? 10_000} ms`)), opts.connectTimeoutMs ?? 10_000);
    let response: IncomingMessage | undefined;
    req.setTimeout(opts.idleTimeoutMs ?? 60_000, () => {
      const err = new HttpSourceError(`no data from ${url.host} for ${opts.idleTimeoutMs ?? 60_000} ms; the server stalled — import again later`);
      // surfaces where the bytes are read: the response stream (or the request, before headers)
      if (response) response.destroy(err);
      else req.destroy(err);
    });
    req.on('response', (res) => {
      clearTimeout(connectTimer);
      response = res;
      resolve(res);
    });
    req.on('error', (e) => {
      clearTimeout(connectTimer);
      reject(e);
    });
    req.end();
  });
}
