/**
 * `/v2/<name>/blobs/<digest>`: blob HEAD and GET (Range → 206, `Docker-Content-Digest`), sent by the
 * one reply for stored bytes (`sendStoredBytes`), and DELETE (unlinks the blob from the repository).
 */
import type { OciRegistry } from '../../domain/registry/oci-registry.js';
import { parseDigest } from '../../domain/registry/repository-name.js';
import { sendfileEngine } from '../../io/sendfile.js';
import { etagOf, sendStoredBytes, type SendOptions } from '../http/blob-reply.js';
import { parseRange } from '../http/byte-range.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import type { OciRoute } from './oci-route.js';

export function blobRoutes(registry: OciRegistry, opts: { bodyIdleTimeoutMs: number }): OciRoute[] {
  const sendOptions: SendOptions = { idleTimeoutMs: opts.bodyIdleTimeoutMs, engine: sendfileEngine() };
  return [
    {
      methods: ['GET', 'HEAD'],
      pattern: /^(?<name>.+)\/blobs\/(?<digest>[^/]+)$/,
      async handler(req, reply, { name, digest }) {
        const d = parseDigest(digest!);
        const head = req.method === 'HEAD';
        const r = await registry.readBlob(ctxOf(req), name!, d, {
          head,
          rangeFor: (size) => parseRange(header(req, 'range'), size, header(req, 'if-range'), etagOf(d)),
        });
        void reply.header('docker-content-digest', r.digest);
        return sendStoredBytes(reply, { digest: r.digest, sizeBytes: r.sizeBytes, range: r.range }, r.body, sendOptions);
      },
    },
    {
      methods: ['DELETE'],
      pattern: /^(?<name>.+)\/blobs\/(?<digest>[^/]+)$/,
      async handler(req, reply, { name, digest }) {
        await registry.deleteBlob(ctxOf(req), name!, parseDigest(digest!));
        return reply.code(202).header('content-length', '0').send();
      },
    },
  ];
}
