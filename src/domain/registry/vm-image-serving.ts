/**
 * Every Imago image pulled over OCI (issue 10 §4): the registry's generated content
 * (`OciRegistry.serveGenerated`, wired in app.ts). A reference the repository does not hold is
 * looked up among the project's images the caller may see (ImageAccess.listImages: the one access
 * model), and the image is served in the form the tag asks for (docs/OCI-VM-IMAGES.md "The rule"):
 *
 * | reference `<project>/<repo>:…` | image | form |
 * |---|---|---|
 * | `:<tag>` (not a stored tag) | the ready image named `<repo>:<tag>` (or `<repo>` for `latest`) | containerDisk |
 * | `:<tag>-containerdisk` | the same | containerDisk |
 * | `:<tag>-artifact` | the same | oras artifact (the stored blob as the layer) |
 * | `@<digest>` | a manifest generated earlier by this process | as generated |
 *
 * The tags list shows the plain tags of those images with the stored ones (not the suffixed forms).
 *
 * Nothing is written: the containerDisk layer is generated on the fly around the stored blob
 * (container-disk-layers.ts), its digest computed once per (blob digest, file name) and cached.
 * Blobs are answered for the digests a generated manifest named (a client fetches the manifest
 * first), after the caller's right to see the image is checked again.
 *
 * Not served (yet): an image whose format KubeVirt cannot read (vmdk, vhd, …) as a containerDisk
 * (it needs its qcow2 variant: VariantService), and an image in a cluster scope (no project, no
 * repository name).
 */
import { Readable } from 'node:stream';
import { EMPTY_CONFIG } from '../../formats/container-disk.js';
import type { BlobStore, ByteRange, Digest } from '../../store/blob-store.js';
import type { ImageAccess } from '../access/image-access.js';
import type { RequestContext } from '../access/authorizer.js';
import { DomainError } from '../errors.js';
import type { Image } from '../images/image.js';
import { storedBlobBody, type BlobBody } from '../images/variant-service.js';
import type { GeneratedBlob, GeneratedContent, StoredManifest } from './oci-registry.js';
import type { RepositoryName } from './repository-name.js';
import { artifactForm, containerDiskForm, containerDiskFormat } from './vm-image-pulls.js';
import { RESERVED_TAG } from './vm-image-pushes.js';

/** the distribution spec's tag grammar (repository-name.ts) */
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

type Served =
  | { kind: 'manifest'; imageId: string; manifest: StoredManifest }
  | { kind: 'bytes'; imageId: string; bytes: Uint8Array }
  | { kind: 'layer'; imageId: string; sizeBytes: number; open(range?: ByteRange): Promise<Readable> }
  | { kind: 'blob'; imageId: string; digest: Digest; sizeBytes: number };

/** entries kept per process; a client that fetched a manifest long ago fetches it again */
const MAX_SERVED = 4096;
const EMPTY_BYTES = new TextEncoder().encode('{}');

export class VmImageServing implements GeneratedContent {
  private readonly served = new Map<string, Served>();
  private readonly layerDigests = new Map<string, Digest>();

  constructor(
    private readonly imageAccess: ImageAccess,
    private readonly store: BlobStore,
  ) {}

  async manifest(ctx: RequestContext, repo: RepositoryName, reference: string): Promise<StoredManifest | undefined> {
    if (reference.includes(':')) {
      const s = this.served.get(key(repo, reference));
      if (s?.kind !== 'manifest' || !(await this.visible(ctx, s.imageId))) return undefined;
      return s.manifest;
    }
    const artifact = reference.endsWith('-artifact');
    const base = artifact
      ? reference.slice(0, -'-artifact'.length)
      : reference.endsWith('-containerdisk')
        ? reference.slice(0, -'-containerdisk'.length)
        : reference;
    if (base === '') return undefined;
    const image = await this.find(ctx, repo, base);
    if (!image?.digest || image.storedSize === undefined) return undefined;
    if (artifact) {
      const form = artifactForm(image);
      this.remember(repo, form.layer.digest, { kind: 'blob', imageId: image.id, digest: form.layer.digest, sizeBytes: form.layer.size });
      this.remember(repo, EMPTY_CONFIG.digest as Digest, { kind: 'bytes', imageId: image.id, bytes: EMPTY_BYTES });
      return this.manifestOf(repo, image, form.manifest);
    }
    if (containerDiskFormat(image).needsVariant) return undefined;
    const cacheKey = `${image.digest}/${image.name}/${image.diskFormat ?? ''}/${image.properties['org.opencontainers.image.title'] ?? ''}`;
    const form = await containerDiskForm(this.store, image, undefined, this.layerDigests.get(cacheKey));
    this.layerDigests.set(cacheKey, form.layer.digest);
    if (this.layerDigests.size > MAX_SERVED) this.layerDigests.delete(this.layerDigests.keys().next().value!);
    const layer = form.layer;
    this.remember(repo, layer.digest, { kind: 'layer', imageId: image.id, sizeBytes: layer.size, open: (range) => layer.open(range) });
    this.remember(repo, form.config.digest, { kind: 'bytes', imageId: image.id, bytes: form.config.bytes });
    return this.manifestOf(repo, image, form.manifest);
  }

  async blob(ctx: RequestContext, repo: RepositoryName, digest: Digest): Promise<GeneratedBlob | undefined> {
    const s = this.served.get(key(repo, digest));
    if (!s || s.kind === 'manifest' || !(await this.visible(ctx, s.imageId))) return undefined;
    switch (s.kind) {
      case 'bytes':
        return { sizeBytes: s.bytes.length, body: async (range) => bytesBody(s.bytes, range) };
      case 'layer':
        return { sizeBytes: s.sizeBytes, body: async (range) => ({ open: () => s.open(range) }) };
      case 'blob':
        return {
          sizeBytes: s.sizeBytes,
          body: (range) =>
            storedBlobBody(
              this.store,
              s.digest,
              s.sizeBytes,
              range,
              (what) => new DomainError('BLOB_NOT_FOUND', `blob ${digest} of ${repo.name} ${what}`, { digest }),
            ),
        };
    }
  }

  /**
   * The plain tags of the repository's ready images the caller sees: `<repo>:<tag>` → `<tag>`,
   * `<repo>` → `latest` (the suffixed forms are derived, not listed). Names that are no valid tag are
   * skipped.
   */
  async tags(ctx: RequestContext, repo: RepositoryName): Promise<string[]> {
    const path = repo.name.slice(repo.project.length + 1);
    const out: string[] = [];
    for (const name of [`${path}:*`, path]) {
      const page = await this.imageAccess.listImages(ctx, { project: repo.project, name, state: ['ready'], limit: 1000 });
      for (const img of page.items) {
        if (img.name === undefined) continue;
        const tag = img.name === path ? 'latest' : img.name.slice(path.length + 1);
        if (TAG.test(tag) && !RESERVED_TAG.test(tag)) out.push(tag);
      }
    }
    return out;
  }

  /** The newest ready image of the project named for the reference, among those the caller sees. */
  private async find(ctx: RequestContext, repo: RepositoryName, tag: string): Promise<Image | undefined> {
    const path = repo.name.slice(repo.project.length + 1);
    const names = tag === 'latest' ? [`${path}:latest`, path] : [`${path}:${tag}`];
    for (const name of names) {
      const page = await this.imageAccess.listImages(ctx, {
        project: repo.project,
        name,
        state: ['ready'],
        sort: [{ key: 'createdAt', dir: 'desc' }],
        limit: 1,
      });
      if (page.items[0]) return page.items[0];
    }
    return undefined;
  }

  private async visible(ctx: RequestContext, imageId: string): Promise<boolean> {
    try {
      const img = await this.imageAccess.getImage(ctx, imageId);
      return img.state === 'ready';
    } catch {
      return false;
    }
  }

  private manifestOf(repo: RepositoryName, image: Image, m: { bytes: Uint8Array; digest: Digest; size: number; mediaType: string }): StoredManifest {
    const manifest: StoredManifest = {
      record: { repository: repo.name, digest: m.digest, mediaType: m.mediaType, sizeBytes: m.size, depth: 0, createdAt: image.updatedAt },
      bytes: Buffer.from(m.bytes),
    };
    this.remember(repo, m.digest, { kind: 'manifest', imageId: image.id, manifest });
    return manifest;
  }

  private remember(repo: RepositoryName, digest: string, s: Served): void {
    const k = key(repo, digest);
    this.served.delete(k);
    this.served.set(k, s);
    if (this.served.size > MAX_SERVED) this.served.delete(this.served.keys().next().value!);
  }
}

function key(repo: RepositoryName, digest: string): string {
  return `${repo.name}@${digest}`;
}

function bytesBody(bytes: Uint8Array, range: ByteRange | undefined): BlobBody {
  const slice = range ? bytes.subarray(range.start, range.end + 1) : bytes;
  return { open: async () => Readable.from([Buffer.from(slice)]) };
}
