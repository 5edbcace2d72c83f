/**
 * `/v2/<name>/blobs/uploads/`: pushing blobs — monolithic (POST ?digest= with the bytes, or POST
 * then PUT), chunked (POST, PATCH with `Content-Range`, GET for the `Range` received, PUT ?digest=
 * to close), cross-repository mount (POST ?mount=&from=), cancel (DELETE). Bodies are streamed to
 * the domain (the one data path), never buffered here.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../../domain/errors.js';
import type { BlobUploads, UploadState } from '../../domain/registry/blob-uploads.js';
import { parseDigest } from '../../domain/registry/repository-name.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { queryOf, type OciRoute } from './oci-route.js';

export function uploadRoutes(uploads: BlobUploads, opts: { bodyIdleTimeoutMs: number }): OciRoute[] {
  const body = (req: FastifyRequest) => withBodyIdleTimeout(req.raw, opts.bodyIdleTimeoutMs);
  const created = (reply: FastifyReply, name: string, digest: string) =>
    reply.code(201).header('location', `/v2/${name}/blobs/${digest}`).header('docker-content-digest', digest).header('content-length', '0').send();
  const session = (reply: FastifyReply, status: number, u: UploadState) =>
    reply
      .code(status)
      .header('location', `/v2/${u.repository}/blobs/uploads/${u.id}`)
      .header('range', `0-${Math.max(0, u.sizeBytes - 1)}`)
      .header('docker-upload-uuid', u.id)
      .header('content-length', '0')
      .send();
  return [
    {
      methods: ['POST'],
      pattern: /^(?<name>.+)\/blobs\/uploads\/$/,
      async handler(req, reply, { name }) {
        const q = queryOf(req);
        const ctx = ctxOf(req);
        if (q.mount !== undefined) {
          const r = await uploads.mount(ctx, name!, parseDigest(q.mount), q.from);
          return r.mounted ? created(reply, name!, r.digest) : session(reply, 202, r.upload);
        }
        if (q.digest !== undefined) {
          const digest = await uploads.pushMonolithic(ctx, name!, parseDigest(q.digest), body(req), contentLength(req));
          return created(reply, name!, digest);
        }
        return session(reply, 202, await uploads.start(ctx, name!));
      },
    },
    {
      methods: ['GET'],
      pattern: /^(?<name>.+)\/blobs\/uploads\/(?<id>[^/]+)$/,
      async handler(req, reply, { name, id }) {
        return session(reply, 204, await uploads.status(ctxOf(req), name!, id!));
      },
    },
    {
      methods: ['PATCH'],
      pattern: /^(?<name>.+)\/blobs\/uploads\/(?<id>[^/]+)$/,
      async handler(req, reply, { name, id }) {
        const range = contentRange(req, id!);
        const u = await uploads.append(ctxOf(req), name!, id!, body(req), { range, announcedSize: contentLength(req) });
        return session(reply, 202, u);
      },
    },
    {
      methods: ['PUT'],
      pattern: /^(?<name>.+)\/blobs\/uploads\/(?<id>[^/]+)$/,
      async handler(req, reply, { name, id }) {
        const q = queryOf(req);
        if (q.digest === undefined) throw new DomainError('DIGEST_INVALID', 'closing an upload needs ?digest=sha256:<hex> of the whole blob', { upload: id });
        const length = contentLength(req);
        const hasBody = length !== 0 && (length !== undefined || req.headers['transfer-encoding'] !== undefined);
        const digest = await uploads.finish(ctxOf(req), name!, id!, parseDigest(q.digest), hasBody ? body(req) : undefined, length);
        return created(reply, name!, digest);
      },
    },
    {
      methods: ['DELETE'],
      pattern: /^(?<name>.+)\/blobs\/uploads\/(?<id>[^/]+)$/,
      async handler(req, reply, { name, id }) {
        await uploads.cancel(ctxOf(req), name!, id!);
        return reply.code(204).send();
      },
    },
  ];
}

function contentLength(req: FastifyRequest): number | undefined {
  const v = header(req, 'content-length');
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v)) throw new DomainError('INVALID_REQUEST', `Content-Length must be a byte count, got "${v.slice(0, 40)}"`);
  return Number(v);
}

/** `Content-Range: <start>-<end>` (the spec's form; `bytes ` / `bytes=` prefixes and a `/total` are accepted). */
function contentRange(req: FastifyRequest, upload: string): { start: number; end: number } | undefined {
  const v = header(req, 'content-range');
  if (v === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d{1,16})-(\d{1,16})(?:\/(?:\d{1,16}|\*))?$/.exec(v.trim());
  if (!m || Number(m[2]) < Number(m[1])) {
    throw new DomainError('INVALID_REQUEST', `Content-Range "${v.slice(0, 60)}" is not <start>-<end> (inclusive byte offsets)`, { upload });
  }
  return { start: Number(m[1]), end: Number(m[2]) };
}
