/**
 * The byte source for "import from a URL": a GET over http or https, read as an async iterable
 * of chunks.
 *
 * - Every connection goes through the UrlPolicy: the URL (scheme, userinfo, literal address)
 *   before the request, and every address a host name resolves to inside the connect, through a
 *   `lookup` of ours that connects only to addresses it has checked — no DNS-rebinding window
 *   between check and connect. Redirects (301/302/303/307/308) are checked the same way, hop by
 *   hop, and counted. A fresh socket per request (no agent pool), so no connection made under
 *   another policy is reused.
 * - Size: a Content-Length over `maxBytes` is refused before the body is read; a body that runs
 *   past it is cut off with an error.
 * - Time: `connectTimeoutMs` bounds name lookup + TCP (+ TLS) connect; `idleTimeoutMs` bounds how
 *   long we wait for the next byte (headers included) while the reader is waiting. A slow but live
 *   transfer never trips it, and a slow reader (backpressure) does not count. No total-time limit.
 * - Resume: when the connection drops mid-body (socket error, premature close), we ask again for
 *   `Range: bytes=<received>-` with `If-Range: <strong ETag or Last-Modified>` and continue the
 *   same iterable. Only a 206 whose Content-Range starts at the byte we need (and agrees with the
 *   length first announced) is accepted; a 200 means the file changed or ranges are unsupported,
 *   and we fail saying the transfer must restart rather than duplicate bytes. `resumeAttempts`
 *   bounds consecutive attempts that bring no new byte.
 * - Cancel: the AbortSignal destroys the socket and ends the iterable with an AbortError at once.
 *
 * Error messages name the URL without its query string: pre-signed URLs carry tokens there.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http, { type ClientRequest, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction, Socket } from 'node:net';
import { UrlNotAllowed, type UrlPolicy } from './url-policy.js';

export interface OpenUrlOptions {
  policy: UrlPolicy;
  /** redirects followed before giving up (default 5) */
  maxRedirects?: number;
  /** the most bytes the body may have (default: no limit) */
  maxBytes?: number;
  /** name lookup + connect (+ TLS handshake), per connection (default 10 s) */
  connectTimeoutMs?: number;
  /** longest wait for the next byte while reading (default 60 s); there is no total-time limit */
  idleTimeoutMs?: number;
  /** consecutive resume attempts without a new byte before giving up (default 5) */
  resumeAttempts?: number;
  signal?: AbortSignal;
  /** called after each chunk with the bytes received so far and the announced total, if any */
  onProgress?(received: number, total?: number): void;
}

export interface UrlSource extends AsyncIterable<Uint8Array> {
  /** from Content-Length, when the server sent one */
  totalBytes?: number;
  /** the URL after redirects */
  finalUrl: string;
  /** the body; iterate it (or the source itself) once */
  body: AsyncIterable<Uint8Array>;
  /** how many times the transfer was resumed after a drop */
  resumes(): number;
  /** releases the connection when the body will not be read to the end */
  close(): void;
}

export class HttpSourceError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    /** the connection failed or dropped (as opposed to an answer we refuse); later may work */
    readonly transient = false,
  ) {
    super(message);
    this.name = 'HttpSourceError';
  }
}

interface Settings {
  policy: UrlPolicy;
  maxRedirects: number;
  maxBytes: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  resumeAttempts: number;
  signal?: AbortSignal;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Resolves once the response headers of the final hop are in; the body is read from the result. */
export async function openUrl(input: string, options: OpenUrlOptions): Promise<UrlSource> {
  const o: Settings = {
    policy: options.policy,
    maxRedirects: options.maxRedirects ?? 5,
    maxBytes: options.maxBytes ?? Number.POSITIVE_INFINITY,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    resumeAttempts: options.resumeAttempts ?? 5,
  };
  // close() and the caller's signal end the transfer the same way
  const closer = new AbortController();
  o.signal = options.signal ? AbortSignal.any([options.signal, closer.signal]) : closer.signal;
  const first = await follow(o.policy.checkUrl(input), o, {});
  const finalUrl = first.url;
  const shown = redact(finalUrl);
  let current = first.res;
  if (current.statusCode === 206) {
    current.destroy();
    throw new HttpSourceError(`${shown} answered 206 Partial Content to a request for the whole file; refusing a partial body`, 206);
  }
  const total = contentLength(current);
  if (total !== undefined && total > o.maxBytes) {
    current.destroy();
    throw new HttpSourceError(`${shown} is ${total} bytes, over the ${o.maxBytes}-byte limit for one image; nothing was read`);
  }
  const etag = header(current, 'etag');
  const validator = etag && !etag.startsWith('W/') ? etag : header(current, 'last-modified'); // RFC 9110: no weak ETag in If-Range
  const rangesRefused = header(current, 'accept-ranges')?.toLowerCase() === 'none';
  let resumes = 0;
  const release = () => current.destroy(); // frees the socket at once, even while the reader holds a chunk or has not started
  o.signal.addEventListener('abort', release, { once: true });

  const restart = 'the transfer must restart from the beginning — import again';
  const broke = (received: number, cause: Error) =>
    `the connection to ${shown} dropped after ${received}${total === undefined ? '' : ` of ${total}`} bytes (${cause.message})`;

  /** One Range request continuing at `received`; a failed connection rejects with a transient HttpSourceError. */
  async function resumeAt(received: number, cause: Error, attempt: number): Promise<IncomingMessage> {
    if (rangesRefused) throw new HttpSourceError(`${broke(received, cause)} and the server does not support resuming (Accept-Ranges: none); ${restart}`);
    if (!validator) {
      throw new HttpSourceError(
        `${broke(received, cause)}; it sent no ETag or Last-Modified, so a resumed transfer could splice two versions of the file; ${restart}`,
      );
    }
    await pause(Math.min(100 * 2 ** attempt, 2000), o.signal, shown);
    resumes++;
    const res = (await follow(new URL(finalUrl), o, { range: `bytes=${received}-`, 'if-range': validator })).res;
    if (res.statusCode !== 206) {
      res.destroy();
      throw new HttpSourceError(
        `${broke(received, cause)}; asked to resume, the server answered ${res.statusCode} with the whole file instead of 206 Partial Content: the file changed since the transfer started or the server does not support ranges; ${restart}`,
        res.statusCode,
      );
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res, 'content-range') ?? '');
    const [start, end, size] = range ? [Number(range[1]), Number(range[2]), range[3] === '*' ? undefined : Number(range[3])] : [];
    if (start !== received || (total !== undefined && (size !== total || end !== total - 1))) {
      res.destroy();
      throw new HttpSourceError(
        `${broke(received, cause)}; asked to resume at byte ${received}, the server sent Content-Range "${header(res, 'content-range') ?? '(none)'}", which does not continue the file${total === undefined ? '' : ` of ${total} bytes`}; ${restart}`,
        206,
      );
    }
    return res;
  }

  async function* read(): AsyncGenerator<Uint8Array> {
    let received = 0;
    let attemptsWithoutData = 0; // bounds resumes that bring no new byte; progress resets it
    let it = current[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    try {
      for (;;) {
        let step: IteratorResult<Buffer>;
        try {
          step = await nextChunk(current, it, o, shown);
          if (step.done && total !== undefined && received < total) throw new Error('the body ended early');
        } catch (e) {
          if (!isDrop(e)) throw e;
          current.destroy();
          let cause = e as Error;
          for (;;) {
            if (attemptsWithoutData >= o.resumeAttempts) {
              throw new HttpSourceError(
                `${broke(received, cause)}; ${o.resumeAttempts} attempts to resume brought no data; import again later`,
                undefined,
                true,
              );
            }
            try {
              current = await resumeAt(received, cause, attemptsWithoutData++);
              break;
            } catch (e2) {
              if (!(e2 instanceof HttpSourceError && e2.transient)) throw e2;
              cause = e2;
            }
          }
          it = current[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
          continue;
        }
        if (step.done) return;
        const chunk = step.value;
        received += chunk.length;
        if (received > o.maxBytes) {
          throw new HttpSourceError(`${shown} sent more than the ${o.maxBytes}-byte limit for one image; the transfer was stopped`);
        }
        attemptsWithoutData = 0;
        options.onProgress?.(received, total);
        yield chunk;
      }
    } finally {
      o.signal!.removeEventListener('abort', release);
      current.destroy();
    }
  }

  const body = read();
  const source: UrlSource = {
    finalUrl,
    body,
    resumes: () => resumes,
    close: () => {
      closer.abort(new Error('closed by the reader'));
      current.destroy();
      void body.return(undefined);
    },
    [Symbol.asyncIterator]: () => body,
  };
  if (total !== undefined) source.totalBytes = total;
  return source;
}

/** A connection-level failure while reading the body: worth a Range request. */
function isDrop(e: unknown): boolean {
  if (e instanceof UrlNotAllowed || (e instanceof Error && e.name === 'AbortError')) return false;
  if (e instanceof HttpSourceError) return false; // idle timeout, size limit: terminal
  return e instanceof Error;
}

/** The next body chunk, racing the idle timer and the abort signal; the timer runs only while we wait. */
function nextChunk(res: IncomingMessage, it: AsyncIterator<Buffer>, o: Settings, shown: string): Promise<IteratorResult<Buffer>> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = () =>
      settle(() => {
        const e = abortError(o.signal!, shown);
        res.destroy();
        reject(e);
      });
    const timer = setTimeout(
      () =>
        settle(() => {
          const e = new HttpSourceError(`no data from ${shown} for ${o.idleTimeoutMs} ms; the server stalled — import again later`, undefined, true);
          res.destroy(e);
          reject(e);
        }),
      o.idleTimeoutMs,
    );
    if (o.signal?.aborted) return onAbort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    // after a timeout or an abort the pending next() rejects too; settle() ignores it
    it.next().then(
      (r) => settle(() => resolve(r)),
      (e: unknown) => settle(() => reject(e)),
    );
  });
}

/** GET `start`, following redirects, each hop re-checked by the policy; resolves with a 2xx response. */
async function follow(start: URL, o: Settings, headers: Record<string, string>): Promise<{ res: IncomingMessage; url: string }> {
  let url = start;
  for (let redirects = 0; ; redirects++) {
    const res = await requestOnce(url, o, headers);
    const status = res.statusCode ?? 0;
    if (REDIRECTS.has(status) && header(res, 'location')) {
      res.destroy();
      if (redirects >= o.maxRedirects) {
        throw new HttpSourceError(
          `${redact(start.href)} redirected more than ${o.maxRedirects} times (last to ${redact(url.href)}); give the final URL`,
          status,
        );
      }
      let next: URL;
      try {
        next = new URL(header(res, 'location')!, url);
      } catch {
        throw new HttpSourceError(`${redact(url.href)} redirected to an invalid location "${header(res, 'location')!.slice(0, 200)}"`, status);
      }
      url = o.policy.checkUrl(next);
      continue;
    }
    if (status < 200 || status > 299) {
      res.destroy();
      throw new HttpSourceError(`${redact(url.href)} answered HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}; check the URL`, status);
    }
    return { res, url: url.href };
  }
}

/** One GET with our lookup, connect timeout, idle timeout until the headers, and abort. */
function requestOnce(url: URL, o: Settings, extra: Record<string, string>): Promise<IncomingMessage> {
  const shown = redact(url.href);
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) return reject(abortError(o.signal, shown));
    const tls = url.protocol === 'https:';
    const host = url.hostname.replace(/^\[|\]$/g, '');
    let req: ClientRequest;
    const fail = (e: Error) => req.destroy(e);
    const onAbort = () => fail(abortError(o.signal!, shown));
    const connectTimer = setTimeout(
      () => fail(new HttpSourceError(`could not connect to ${url.host} within ${o.connectTimeoutMs} ms; check the host is reachable`, undefined, true)),
      o.connectTimeoutMs,
    );
    const done = () => {
      clearTimeout(connectTimer);
      o.signal?.removeEventListener('abort', onAbort);
    };
    req = (tls ? https : http).request(url, {
      method: 'GET',
      headers: { 'user-agent': 'imago-import', accept: '*/*', 'accept-encoding': 'identity', ...extra },
      lookup: checkedLookup(o.policy, host),
      agent: false, // a fresh socket: never one connected under another policy
    });
    o.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('socket', (socket: Socket) => {
      socket.once(tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(connectTimer);
        socket.setTimeout(o.idleTimeoutMs, () =>
          fail(
            new HttpSourceError(
              `${url.host} sent no response within ${o.idleTimeoutMs} ms of connecting; the server stalled — import again later`,
              undefined,
              true,
            ),
          ),
        );
      });
    });
    req.on('response', (res) => {
      done();
      res.socket?.setTimeout(0); // from here the reader's idle timer rules
      resolve(res);
    });
    req.on('error', (e) => {
      done();
      if (e instanceof UrlNotAllowed || e instanceof HttpSourceError || e.name === 'AbortError') reject(e);
      else reject(new HttpSourceError(`could not fetch ${shown}: ${e.message}`, undefined, true));
    });
    req.end();
  });
}

/**
 * dns.lookup with every resolved address checked by the policy before net connects to it; the
 * addresses handed back are exactly the checked ones. Literal addresses never reach a lookup —
 * UrlPolicy.checkUrl covers them.
 */
function checkedLookup(policy: UrlPolicy, host: string): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { all: true, family: options.family, hints: options.hints }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 4);
      if (addresses.length === 0) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '', 4);
      try {
        for (const a of addresses) policy.checkAddress(a.address, host);
      } catch (e) {
        return callback(e as NodeJS.ErrnoException, '', 4);
      }
      if (options.all) return (callback as unknown as (e: null, all: LookupAddress[]) => void)(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

function header(res: IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function contentLength(res: IncomingMessage): number | undefined {
  const v = header(res, 'content-length');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** The URL without userinfo, query or fragment: pre-signed URLs keep their tokens in the query. */
function redact(href: string): string {
  const u = new URL(href);
  return `${u.origin}${u.pathname}${u.search ? '?…' : ''}`;
}

function abortError(signal: AbortSignal, shown: string): Error {
  const e = new Error(`the transfer from ${shown} was cancelled`, { cause: signal.reason });
  e.name = 'AbortError';
  return Object.assign(e, { code: 'ABORT_ERR' });
}

function pause(ms: number, signal: AbortSignal | undefined, shown: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal, shown));
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError(signal!, shown));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
