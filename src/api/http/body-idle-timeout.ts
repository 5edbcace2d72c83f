/**
 * A request body that stops arriving is cut off. Node's `requestTimeout` bounds the whole request
 * (a large, slow but steady upload would be killed), so Fastify runs with it off; this bounds the
 * wait for the *next* bytes instead. Only the time spent waiting on the client counts: while the
 * ingest is busy (backpressure), no `next()` is pending and no timer runs.
 */
import { PassThrough, type Readable } from 'node:stream';
import { DomainError } from '../../domain/errors.js';

export function bodyIdleError(idleMs: number, what: 'upload' | 'request'): DomainError {
  const retry = what === 'upload' ? 'upload again' : 'send the request again';
  return new DomainError('REQUEST_TIMEOUT', `no bytes received for ${formatSeconds(idleMs)}; the ${what} was cut off — ${retry}`, { idleMs });
}

/**
 * A parsed (JSON) body as a stream that fails with REQUEST_TIMEOUT when no bytes arrive for
 * `idleMs`. The parser reads as fast as bytes come, so all idle time is the client's.
 */
export function bodyWithIdleTimeout(payload: Readable, idleMs: number): Readable & { receivedEncodedLength: number } {
  const out = Object.assign(new PassThrough(), { receivedEncodedLength: 0 });
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      payload.unpipe(out);
      out.destroy(bodyIdleError(idleMs, 'request'));
    }, idleMs);
  };
  arm();
  payload.on('data', (chunk: Buffer) => {
    out.receivedEncodedLength += chunk.length;
    arm();
  });
  payload.on('end', () => clearTimeout(timer));
  payload.on('error', (e) => {
    clearTimeout(timer);
    out.destroy(e);
  });
  out.on('close', () => clearTimeout(timer));
  payload.pipe(out);
  return out;
}

/** `body`, failing with REQUEST_TIMEOUT when no chunk arrives within `idleMs` of asking for one. */
export async function* withBodyIdleTimeout(body: AsyncIterable<Uint8Array>, idleMs: number, what: 'upload' | 'request' = 'upload'): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const next = it.next();
      // once the timer wins, the pending read fails when the socket is destroyed: nobody awaits it then
      next.catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(bodyIdleError(idleMs, what)), idleMs);
      });
      let r: IteratorResult<Uint8Array>;
      try {
        r = await Promise.race([next, idle]);
      } finally {
        clearTimeout(timer);
      }
      if (r.done) {
        finished = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!finished && it.return) it.return().catch(() => undefined);
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
