/**
 * The reply that carries stored bytes (an image, a stored variant; later an OCI blob): one header
 * block for every door. The ETag is the sha256 digest; Repr-Digest (RFC 9530) carries sha-256 and,
 * when known, sha-512; Content-MD5 carries the md5 checksum Glance clients compare.
 */
import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ByteRange } from '../../store/blob-store.js';
import { header } from './request-header.js';

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

/** Writes the headers for `bytes` and sends `body` (none for HEAD). */
export function sendStoredBytes(reply: FastifyReply, bytes: StoredBytes, body: Readable | undefined): FastifyReply {
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
  return body === undefined ? reply.send() : reply.send(body);
}
