/**
 * The reply that carries stored bytes (an image, a stored variant; later an OCI blob): one header
 * block for every door. The ETag is the sha256 digest; Repr-Digest (RFC 9530) carries sha-256 and,
 * when known, sha-512; Content-MD5 carries the md5 checksum Glance clients compare.
 *
 * Bytes that are a range of a local file go to a plain TCP socket through sendfile(2) (the native
 * engine of src/io/sendfile.ts): the event loop writes the headers and is told when the body is
 * out, and no byte passes through user space. Anything else (TLS, object storage, no addon, a file
 * gone since it was looked up) is streamed.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { OutgoingHttpHeaders } from 'node:http';
import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { BlobBody, FileRange } from '../../domain/images/variant-service.js';
import { SendfileError, type SendfileEngine } from '../../io/sendfile.js';
import type { ByteRange } from '../../store/blob-store.js';
import { header } from './request-header.js';
import { requestTurns } from '../../io/turn-budget.js';

export interface StoredBytes {
  /** `sha256:<hex>`; absent while the bytes have no digest yet */
  digest?: string;
  /** hex */
  sha512?: string;
  /** hex */
  md5?: string;
  sizeBytes: number;
  /** the part asked for with Range (a 206); absent or null for the whole */
  range?: ByteRange | null;
}

/** The strong ETag of bytes with this digest. */
export function etagOf(digest: string): string {
  return `"${digest.slice('sha256:'.length)}"`;
}

/** The client already holds these bytes (If-None-Match names their ETag). */
export function isNotModified(req: FastifyRequest, etag: string | undefined): boolean {
  return etag !== undefined && header(req, 'if-none-match') === etag;
}

export interface SendOptions {
  /** a client that takes no byte for this long is cut off (sendfile path) */
  idleTimeoutMs: number;
  /** the sendfile engine; undefined streams every body */
  engine?: SendfileEngine;
}

/** Writes the headers for `bytes` and sends `body` (none for HEAD). */
export async function sendStoredBytes(reply: FastifyReply, bytes: StoredBytes, body: BlobBody | undefined, opts: SendOptions): Promise<FastifyReply> {
  void reply.header('content-type', 'application/octet-stream').header('accept-ranges', 'bytes');
  if (bytes.digest) {
    const digests = [`sha-256=:${Buffer.from(bytes.digest.slice('sha256:'.length), 'hex').toString('base64')}:`];
    if (bytes.sha512) digests.push(`sha-512=:${Buffer.from(bytes.sha512, 'hex').toString('base64')}:`);
    void reply.header('etag', etagOf(bytes.digest)).header('repr-digest', digests.join(', ')).header('x-image-digest', bytes.digest);
  }
  if (bytes.md5) void reply.header('content-md5', bytes.md5);
  const { range, sizeBytes } = bytes;
  if (range) {
    void reply
      .code(206)
      .header('content-range', `bytes ${range.start}-${range.end}/${sizeBytes}`)
      .header('content-length', String(range.end - range.start + 1));
  } else {
    void reply.header('content-length', String(sizeBytes));
  }
  if (body === undefined) return reply.send();
  const sendfile = opts.engine && body.file && plainSocketFd(reply.raw.socket) !== undefined;
  // a file that vanished since it was looked up (GC) is left to the stream path, which says so
  // the download's second part (open, headers, sendfile) takes its turn like a request's first
  const turn = requestTurns.enter();
  if (turn) await turn;
  const file = sendfile ? await open(body.file!.path, 'r').catch(() => undefined) : undefined;
  if (file) return sendFromFile(reply, file, body.file!, opts.engine!, opts.idleTimeoutMs);
  return reply.send(await body.open());
}

/** The fd of a plain (non-TLS) connected socket: one the kernel can sendfile to. */
function plainSocketFd(socket: Socket | null): number | undefined {
  if (!(socket instanceof Socket) || socket instanceof TLSSocket || socket.destroyed) return undefined;
  // libuv's stream handle carries its fd (an internal of node's net, stable since Node 0.x; -1 on Windows)
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * The headers through node:http (keep-alive and the request's lifecycle stay node's and Fastify's:
 * `finish` runs the onResponse hooks and the access log), the body through the engine once the
 * headers are in the socket's kernel buffer, then `end()` with nothing left to write. A transfer
 * that fails after the headers closes the connection: the client sees a short body, never a whole one.
 */
async function sendFromFile(reply: FastifyReply, file: FileHandle, range: FileRange, engine: SendfileEngine, idleMs: number): Promise<FastifyReply> {
  reply.hijack();
  const res = reply.raw;
  const socket = res.socket!;
  let cancel: (() => void) | undefined;
  const onClose = () => cancel?.();
  socket.once('close', onClose);
  try {
    res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
    res.flushHeaders();
    // the write callback of an empty write comes after every earlier write reached the kernel
    await new Promise<void>((resolve, reject) => socket.write(Buffer.alloc(0), (e) => (e ? reject(e) : resolve())));
    // read now, not before the awaits: a socket closed meanwhile has no fd, and its old number may be another connection's
    const fd = plainSocketFd(socket);
    if (fd === undefined) throw new SendfileError('ECONNRESET', 0);
    const transfer = engine.send(fd, file.fd, range.start, range.length, idleMs);
    cancel = transfer.cancel;
    await transfer.done;
    res.end();
  } catch (e) {
    const code = e instanceof SendfileError ? e.code : undefined;
    // ENODATA: the blob ended early, changed in storage after it was checked — damage, not a client leaving
    if (code === 'ENODATA') reply.log.error({ err: e, path: range.path }, 'a stored blob ended before its recorded size while it was sent');
    else reply.log.info({ err: e }, 'download cut off');
    res.destroy();
  } finally {
    socket.off('close', onClose);
    await file.close();
  }
  return reply;
}
