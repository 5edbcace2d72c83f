/**
 * `/v2/<name>/manifests/<reference>`: GET and HEAD by tag or digest (content negotiation by
 * `Accept`), PUT (the body read up to the manifest limit, never past it), DELETE (by digest: the
 * manifest and its tags; by tag: the tag).
 */
import type { FastifyRequest } from 'fastify';
import { DomainError } from '../../domain/errors.js';
import { MANIFEST_LIMITS, mediaTypeOf } from '../../domain/registry/oci-manifest.js';
import type { OciRegistry } from '../../domain/registry/oci-registry.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { etagOf } from '../http/blob-reply.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import type { OciRoute } from './oci-route.js';

export function manifestRoutes(registry: OciRegistry, opts: { bodyIdleTimeoutMs: number }): OciRoute[] {
  return [
    {
      methods: ['GET', 'HEAD'],
      pattern: /^(?<name>.+)\/manifests\/(?<reference>[^/]+)$/,
      async handler(req, reply, { name, reference }) {
        const head = req.method === 'HEAD';
        const m = await registry.getManifest(ctxOf(req), name!, reference!, head);
        const accepted = acceptedTypes(req);
        if (accepted && !accepts(accepted, m.record.mediaType)) {
          throw new DomainError(
            'MANIFEST_NOT_FOUND',
            `manifest ${reference} of ${name} is a ${m.record.mediaType}, which the Accept header (${[...accepted].join(', ').slice(0, 300)}) does not take; add it to Accept`,
            { mediaType: m.record.mediaType },
          );
        }
        void reply
          .header('content-type', m.record.mediaType)
          .header('docker-content-digest', m.record.digest)
          .header('etag', etagOf(m.record.digest))
          .header('content-length', String(m.record.sizeBytes));
        return head ? reply.send() : reply.send(m.bytes);
      },
    },
    {
      methods: ['PUT'],
      pattern: /^(?<name>.+)\/manifests\/(?<reference>[^/]+)$/,
      async handler(req, reply, { name, reference }) {
        const bytes = await readManifestBody(req, opts.bodyIdleTimeoutMs);
        const record = await registry.putManifest(ctxOf(req), name!, reference!, bytes, header(req, 'content-type'));
        void reply
          .code(201)
          .header('location', `/v2/${name}/manifests/${record.digest}`)
          .header('docker-content-digest', record.digest)
          .header('content-length', '0');
        if (record.subject) void reply.header('oci-subject', record.subject);
        return reply.send();
      },
    },
    {
      methods: ['DELETE'],
      pattern: /^(?<name>.+)\/manifests\/(?<reference>[^/]+)$/,
      async handler(req, reply, { name, reference }) {
        await registry.deleteManifest(ctxOf(req), name!, reference!);
        return reply.code(202).header('content-length', '0').send();
      },
    },
  ];
}

/** The media types an `Accept` header takes (q=0 ones left out); undefined when it takes anything. */
function acceptedTypes(req: FastifyRequest): Set<string> | undefined {
  const raw = req.headers.accept;
  const value = Array.isArray(raw) ? raw.join(',') : raw;
  if (value === undefined || value.trim() === '') return undefined;
  const out = new Set<string>();
  for (const part of value.split(',')) {
    const [type, ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    if (!type || params.some((p) => /^q=0(?:\.0*)?$/.test(p))) continue;
    if (type === '*/*' || type === 'application/*') return undefined;
    out.add(type);
  }
  return out;
}

function accepts(types: Set<string>, mediaType: string): boolean {
  return types.has(mediaType.toLowerCase());
}

/** The PUT body, refused once it passes the manifest limit (413) — announced or not — without reading on. */
async function readManifestBody(req: FastifyRequest, idleMs: number): Promise<Buffer> {
  const limit = MANIFEST_LIMITS.maxBytes;
  const tooLarge = (n: number, announced: boolean) =>
    new DomainError(
      'SIZE_LIMIT',
      `the manifest${announced ? "'s announced size" : ''} (${n} bytes${announced ? '' : ' and more'}) is over the ${limit}-byte limit for one manifest`,
      {
        size: n,
        limit,
      },
    );
  const announced = header(req, 'content-length');
  if (announced !== undefined && Number(announced) > limit) throw tooLarge(Number(announced), true);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of withBodyIdleTimeout(req.raw, idleMs, 'request')) {
    n += chunk.length;
    if (n > limit) throw tooLarge(n, false);
    parts.push(Buffer.from(chunk));
  }
  if (mediaTypeOf(header(req, 'content-type')) === undefined && n === 0) throw new DomainError('MANIFEST_INVALID', 'the PUT has no manifest body');
  return Buffer.concat(parts);
}
