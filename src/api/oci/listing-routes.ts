/**
 * Content discovery: `/v2/<name>/tags/list` (lexical order, `n`/`last`, `Link` to the next page),
 * `/v2/<name>/referrers/<digest>` (an image index of the manifests whose subject it is;
 * `artifactType` filters, and `OCI-Filters-Applied` says so) and `/v2/_catalog` (the repositories
 * the caller may read).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../../domain/errors.js';
import { OCI_INDEX } from '../../domain/registry/oci-manifest.js';
import type { OciRegistry, Page } from '../../domain/registry/oci-registry.js';
import { parseDigest } from '../../domain/registry/repository-name.js';
import { ctxOf } from '../http/principal.js';
import { queryOf, type OciRoute } from './oci-route.js';

export function listingRoutes(registry: OciRegistry): OciRoute[] {
  return [
    {
      methods: ['GET'],
      pattern: /^(?<name>.+)\/tags\/list$/,
      async handler(req, reply, { name }) {
        const { n, last } = paging(req);
        const page = await registry.tags(ctxOf(req), name!, { n, last });
        linkNext(reply, `/v2/${name}/tags/list`, n, page);
        return reply.send({ name, tags: page.items });
      },
    },
    {
      methods: ['GET'],
      pattern: /^(?<name>.+)\/referrers\/(?<digest>[^/]+)$/,
      async handler(req, reply, { name, digest }) {
        const artifactType = queryOf(req).artifactType;
        const manifests = await registry.referrers(ctxOf(req), name!, parseDigest(digest!), artifactType);
        if (artifactType !== undefined) void reply.header('oci-filters-applied', 'artifactType');
        // the body is an image index: its media type exactly, no charset parameter
        return reply.header('content-type', OCI_INDEX).send(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests })));
      },
    },
    {
      methods: ['GET'],
      pattern: /^_catalog$/,
      async handler(req, reply) {
        const { n, last } = paging(req);
        const page = await registry.catalog(ctxOf(req), { n, last });
        linkNext(reply, '/v2/_catalog', n, page);
        return reply.send({ repositories: page.items });
      },
    },
  ];
}

function paging(req: FastifyRequest): { n?: number; last?: string } {
  const q = queryOf(req);
  let n: number | undefined;
  if (q.n !== undefined) {
    if (!/^\d{1,6}$/.test(q.n)) throw new DomainError('INVALID_REQUEST', `n must be a whole number of entries (at most 999999), not "${q.n.slice(0, 40)}"`);
    n = Number(q.n);
  }
  return { n, last: q.last };
}

/** RFC 8288 `Link: <…?n=N&last=X>; rel="next"` when there is a next page. */
function linkNext(reply: FastifyReply, path: string, n: number | undefined, page: Page<string>): void {
  if (page.next === undefined) return;
  const params = new URLSearchParams();
  if (n !== undefined) params.set('n', String(n));
  params.set('last', page.next);
  void reply.header('link', `<${path}?${params.toString()}>; rel="next"`);
}
