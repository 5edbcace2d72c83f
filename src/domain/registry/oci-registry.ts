/**
 * The OCI registry on behalf of a principal (distribution spec v1.1): blob reads and deletes,
 * manifests by tag and digest, tags, referrers and the catalog. Pushing blobs is `BlobUploads`
 * (blob-uploads.ts). Manifests are blobs of the one store too; the database keeps what listing,
 * referrers and GC need (registry-repository.ts).
 *
 * The seam for VM images (issue 10 §3): `whenManifestPut(hook)` registers a hook that runs after a
 * manifest was checked and its bytes stored, before it is recorded or tagged, with the manifest and
 * its layer descriptors. A hook that throws (e.g. MANIFEST_INVALID naming a refused layer) refuses
 * the PUT: nothing is recorded and no tag moves. A hook that made something (an image) returns its
 * `ManifestPutEffect`: when recording fails after it, the registry undoes it (compensation: the
 * ingest cannot share the record's transaction), so a failed PUT leaves no image without its tag;
 * `recorded()` runs only once the tag points at the manifest.
 *
 * The read side's seam (issue 10 §4): `serveGenerated(source)` answers the manifests and blobs the
 * repository does not hold — the OCI forms of Imago images (vm-image-serving.ts) — after the
 * caller's pull right on the repository was checked and the stored content missed. Stored content
 * always wins.
 */
import type { Readable } from 'node:stream';
import type { RequestContext } from '../access/authorizer.js';
import type { AuditLog } from '../access/audit-log.js';
import { DomainError } from '../errors.js';
import { stageBlob } from '../images/stage-blob.js';
import { storedBlobBody, type BlobBody } from '../images/variant-service.js';
import type { BlobStore, ByteRange, Digest } from '../../store/blob-store.js';
import { MANIFEST_LIMITS, parseManifest, referencedBlobs, type Descriptor, type ParsedManifest } from './oci-manifest.js';
import { repositoryNotFound, type RegistryAccess } from './registry-access.js';
import type { RegistryQuota } from './registry-quota.js';
import type { ManifestRecord, RegistryRepository } from './registry-repository.js';
import { parseReference, type RepositoryName } from './repository-name.js';

export interface ManifestPutEvent {
  ctx: RequestContext;
  repository: RepositoryName;
  /** the tag the PUT names; absent for a PUT by digest */
  tag?: string;
  digest: Digest;
  sizeBytes: number;
  manifest: ParsedManifest;
  /** the image manifest's layers (empty for an index) */
  layers: readonly Descriptor[];
}

/**
 * What a hook did that the PUT's outcome decides: `undo` runs when the manifest could not be
 * recorded after the hook (a later hook refused it, the quota, a database error), `recorded` once
 * it is recorded and tagged.
 */
export interface ManifestPutEffect {
  undo(): Promise<void>;
  recorded?(): Promise<void>;
}

/** Runs before a stored manifest is recorded and tagged; throwing refuses the PUT. */
export type ManifestPutHook = (e: ManifestPutEvent) => Promise<ManifestPutEffect | void>;

/** A blob the registry does not hold but can produce (a generated layer or config, an image's blob). */
export interface GeneratedBlob {
  sizeBytes: number;
  body(range: ByteRange | undefined): Promise<BlobBody>;
}

/** Manifests and blobs generated for a repository (undefined: none; the usual 404 follows). */
export interface GeneratedContent {
  manifest(ctx: RequestContext, repo: RepositoryName, reference: string): Promise<StoredManifest | undefined>;
  blob(ctx: RequestContext, repo: RepositoryName, digest: Digest): Promise<GeneratedBlob | undefined>;
  /** the tags it answers for the repository (listed with the stored ones) */
  tags(ctx: RequestContext, repo: RepositoryName): Promise<string[]>;
  /** the repositories it answers for in these projects (undefined: every project), listed by `_catalog` with the stored ones */
  repositories(ctx: RequestContext, projects: readonly string[] | undefined): Promise<string[]>;
}

export interface StoredManifest {
  record: ManifestRecord;
  /** absent for HEAD */
  bytes?: Buffer;
}

export interface BlobRead {
  digest: Digest;
  sizeBytes: number;
  range?: ByteRange;
  /** absent for HEAD */
  body?: BlobBody;
}

export interface Page<T> {
  items: T[];
  /** the `last` of the next page, when there is one */
  next?: string;
}

export class OciRegistry {
  private readonly hooks: ManifestPutHook[] = [];
  private generated: GeneratedContent | undefined;

  constructor(
    private readonly repo: RegistryRepository,
    private readonly store: BlobStore,
    private readonly access: RegistryAccess,
    private readonly quota: RegistryQuota,
    private readonly audit: AuditLog,
  ) {}

  /** The hook runs on every manifest PUT (see the file's comment). */
  whenManifestPut(hook: ManifestPutHook): void {
    this.hooks.push(hook);
  }

  /** What reads fall back to when the repository holds no such manifest or blob (see the file's comment). */
  serveGenerated(source: GeneratedContent): void {
    this.generated = source;
  }

  /** GET /v2/: the caller is authenticated. */
  base(ctx: RequestContext): void {
    this.access.readableProjects(ctx);
  }

  private async readable(ctx: RequestContext, name: string): Promise<RepositoryName> {
    const repo = await this.access.pull(ctx, name);
    if (!(await this.repo.repositoryExists(repo.name))) throw repositoryNotFound(repo.name);
    return repo;
  }

  /** A blob linked to the repository (HEAD: no body). */
  async readBlob(
    ctx: RequestContext,
    name: string,
    digest: Digest,
    opts: { head: boolean; rangeFor?: (sizeBytes: number) => ByteRange | null },
  ): Promise<BlobRead> {
    const repo = await this.access.pull(ctx, name);
    const exists = await this.repo.repositoryExists(repo.name);
    const sizeBytes = exists ? await this.repo.linkedBlob(repo.name, digest) : undefined;
    if (sizeBytes === undefined) {
      const g = await this.generated?.blob(ctx, repo, digest);
      if (!g) throw exists ? blobUnknown(repo.name, digest) : repositoryNotFound(repo.name);
      const range = opts.rangeFor?.(g.sizeBytes) ?? undefined;
      if (opts.head) return { digest, sizeBytes: g.sizeBytes, range };
      return { digest, sizeBytes: g.sizeBytes, range, body: await g.body(range) };
    }
    const range = opts.rangeFor?.(sizeBytes) ?? undefined;
    if (opts.head) return { digest, sizeBytes, range };
    const body = await storedBlobBody(
      this.store,
      digest,
      sizeBytes,
      range,
      (what) => new DomainError('BLOB_NOT_FOUND', `blob ${digest} of ${repo.name} ${what}; push it again`, { digest }),
    );
    return { digest, sizeBytes, range, body };
  }

  /** DELETE a blob: unlinks it from the repository (the bytes are GC's once nothing references them). */
  async deleteBlob(ctx: RequestContext, name: string, digest: Digest): Promise<void> {
    const repo = await this.access.push(ctx, name);
    await this.audit.record(ctx, 'oci.blob.delete', { target: `${repo.name}@${digest}`, project: repo.project }, async () => {
      if (!(await this.repo.unlinkBlob(repo.name, digest))) throw blobUnknown(repo.name, digest);
    });
  }

  async getManifest(ctx: RequestContext, name: string, reference: string, head: boolean): Promise<StoredManifest> {
    const repo = await this.access.pull(ctx, name);
    const ref = parseReference(reference);
    const exists = await this.repo.repositoryExists(repo.name);
    const record = !exists ? undefined : ref.kind === 'tag' ? await this.repo.tagged(repo.name, ref.tag) : await this.repo.manifest(repo.name, ref.digest);
    if (!record) {
      const g = await this.generated?.manifest(ctx, repo, reference);
      if (!g) throw exists ? manifestUnknown(repo.name, reference) : repositoryNotFound(repo.name);
      return head ? { record: g.record } : g;
    }
    if (head) return { record };
    const stream: Readable = await this.store.read(record.digest).catch(() => {
      throw new DomainError('BLOB_NOT_FOUND', `the bytes of manifest ${record.digest} are missing from storage; push the manifest again`, {
        digest: record.digest,
      });
    });
    const parts: Buffer[] = [];
    for await (const b of stream) parts.push(b as Buffer);
    return { record, bytes: Buffer.concat(parts) };
  }

  /**
   * PUT a manifest under a tag or its digest: parsed and checked (media type, limits, every
   * referenced blob linked here with its size, every child manifest stored here), its bytes stored
   * as a blob, the hooks run, then recorded and tagged. Returns its digest and subject.
   */
  async putManifest(ctx: RequestContext, name: string, reference: string, bytes: Uint8Array, contentType: string | undefined): Promise<ManifestRecord> {
    const repo = await this.access.push(ctx, name);
    const ref = parseReference(reference);
    return this.audit.record(ctx, 'oci.manifest.put', { target: `${repo.name}:${reference}`.slice(0, 500), project: repo.project }, async (note) => {
      const manifest = parseManifest(bytes, contentType);
      const children: Digest[] = [];
      let depth = 0;
      for (const d of referencedBlobs(manifest)) {
        const size = await this.repo.linkedBlob(repo.name, d.digest);
        if (size === undefined) throw blobMissing(repo.name, d, 'blob');
        if (size !== d.size)
          throw new DomainError('MANIFEST_INVALID', `the manifest gives blob ${d.digest} ${d.size} bytes, but ${repo.name} holds it with ${size}`, {
            digest: d.digest,
          });
        children.push(d.digest);
      }
      for (const d of manifest.manifests) {
        const child = await this.repo.manifest(repo.name, d.digest);
        if (!child) throw blobMissing(repo.name, d, 'manifest');
        if (child.sizeBytes !== d.size)
          throw new DomainError('MANIFEST_INVALID', `the index gives manifest ${d.digest} ${d.size} bytes, but it has ${child.sizeBytes}`, {
            digest: d.digest,
          });
        depth = Math.max(depth, child.depth + 1);
        children.push(d.digest);
      }
      if (depth > MANIFEST_LIMITS.maxIndexDepth) {
        throw new DomainError('MANIFEST_INVALID', `the index nests ${depth} levels of indexes; at most ${MANIFEST_LIMITS.maxIndexDepth} are accepted`, {
          depth,
        });
      }
      const existing = ref.kind === 'digest' ? await this.repo.manifest(repo.name, ref.digest) : undefined;
      if (!existing) await this.quota.early(repo.project, bytes.length);
      const staged = await stageBlob(this.store, once(bytes), { md5: false, sha512: false, expect: ref.kind === 'digest' ? ref.digest : undefined });
      const digest = staged.blob.digest;
      note({ digest });
      const tag = ref.kind === 'tag' ? ref.tag : undefined;
      const effects: ManifestPutEffect[] = [];
      const record: ManifestRecord = {
        repository: repo.name,
        digest,
        mediaType: manifest.mediaType,
        sizeBytes: bytes.length,
        depth,
        createdAt: new Date(),
      };
      if (manifest.artifactType !== undefined) record.artifactType = manifest.artifactType;
      if (manifest.subject) record.subject = manifest.subject.digest;
      if (manifest.annotations) record.annotations = manifest.annotations;
      try {
        for (const hook of this.hooks) {
          const effect = await hook({ ctx, repository: repo, tag, digest, sizeBytes: bytes.length, manifest, layers: manifest.layers });
          if (effect) effects.push(effect);
        }
        await this.repo.underQuota(
          repo.project,
          async (w) => {
            await w.ensureRepository(repo.name, repo.project);
            await w.putManifest(record, children, tag);
          },
          this.quota.check(repo.project),
        );
      } catch (e) {
        for (const effect of effects.reverse()) await effect.undo();
        throw e;
      }
      for (const effect of effects) await effect.recorded?.();
      return record;
    });
  }

  /**
   * DELETE by digest removes the manifest and its tags; by tag, the tag only. A manifest an index of
   * the repository lists is not deleted (400, the spec's status for a refused delete): the index
   * would reference a manifest the repository no longer holds, which a pull of the index then fails on.
   */
  async deleteManifest(ctx: RequestContext, name: string, reference: string): Promise<void> {
    const repo = await this.access.push(ctx, name);
    const ref = parseReference(reference);
    await this.audit.record(ctx, 'oci.manifest.delete', { target: `${repo.name}:${reference}`.slice(0, 500), project: repo.project }, async () => {
      const gone = ref.kind === 'tag' ? await this.repo.deleteTag(repo.name, ref.tag) : await this.repo.deleteManifest(repo.name, ref.digest);
      if (typeof gone === 'object') {
        throw new DomainError(
          'INVALID_REQUEST',
          `manifest ${reference} is listed by ${gone.listedBy.length === 1 ? 'index' : 'indexes'} ${gone.listedBy.join(', ')} of ${repo.name}; delete ${gone.listedBy.length === 1 ? 'that index' : 'those indexes'} first (by digest), then this manifest`,
          { listedBy: gone.listedBy },
        );
      }
      if (!gone) throw manifestUnknown(repo.name, reference);
    });
  }

  /** The repository's tags in lexical (byte) order, `n` after `last`. */
  async tags(ctx: RequestContext, name: string, opts: { n?: number; last?: string }): Promise<Page<string>> {
    const repo = await this.access.pull(ctx, name);
    const exists = await this.repo.repositoryExists(repo.name);
    const stored = exists ? await this.repo.tags(repo.name) : [];
    const generated = (await this.generated?.tags(ctx, repo)) ?? [];
    if (!exists && generated.length === 0) throw repositoryNotFound(repo.name);
    const all = [...new Set([...stored, ...generated])].sort(byteOrder);
    const after = opts.last === undefined ? all : all.filter((t) => byteOrder(t, opts.last!) > 0);
    return page(after, opts.n);
  }

  /** The manifests whose subject is `digest`, as descriptors; `artifactType` filters them. */
  async referrers(ctx: RequestContext, name: string, digest: Digest, artifactType?: string): Promise<Descriptor[]> {
    const repo = await this.readable(ctx, name);
    const records = await this.repo.referrers(repo.name, digest);
    return records
      .filter((r) => artifactType === undefined || r.artifactType === artifactType)
      .map((r) => {
        const d: Descriptor = { mediaType: r.mediaType, digest: r.digest, size: r.sizeBytes };
        if (r.artifactType !== undefined) d.artifactType = r.artifactType;
        if (r.annotations !== undefined) d.annotations = r.annotations;
        return d;
      });
  }

  /** The repositories the caller may read, in lexical order, `n` after `last`. */
  async catalog(ctx: RequestContext, opts: { n?: number; last?: string }): Promise<Page<string>> {
    const projects = this.access.readableProjects(ctx);
    const limit = Math.min(opts.n ?? DEFAULT_PAGE, MAX_PAGE);
    if (limit === 0) return { items: [] };
    const rows = await this.repo.repositories({ projects, last: opts.last, limit: limit + 1 });
    const generated = (await this.generated?.repositories(ctx, projects)) ?? [];
    const after = generated.filter((r) => opts.last === undefined || byteOrder(r, opts.last) > 0);
    return page([...new Set([...rows, ...after])].sort(byteOrder), limit);
  }
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

const DEFAULT_PAGE = 1000;
const MAX_PAGE = 10_000;

function page(items: string[], n: number | undefined): Page<string> {
  const limit = Math.min(n ?? MAX_PAGE, MAX_PAGE);
  if (items.length <= limit) return { items };
  const out = items.slice(0, limit);
  return limit === 0 ? { items: [] } : { items: out, next: out[out.length - 1] };
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export function blobUnknown(name: string, digest: Digest): DomainError {
  return new DomainError('BLOB_NOT_FOUND', `blob ${digest} is not in repository ${name}; push it (or mount it from a repository you can read)`, {
    name,
    digest,
  });
}

function manifestUnknown(name: string, reference: string): DomainError {
  return new DomainError('MANIFEST_NOT_FOUND', `repository ${name} has no manifest ${reference.slice(0, 140)}; list its tags with GET /v2/${name}/tags/list`, {
    name,
    reference: reference.slice(0, 200),
  });
}

function blobMissing(name: string, d: Descriptor, what: 'blob' | 'manifest'): DomainError {
  return new DomainError(
    'MANIFEST_BLOB_UNKNOWN',
    `the manifest references ${what} ${d.digest} (${d.mediaType.slice(0, 100)}), which repository ${name} does not hold; push the ${what === 'blob' ? 'blob' : 'child manifest'} first`,
    { digest: d.digest },
  );
}
