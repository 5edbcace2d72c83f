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
 * An image whose format KubeVirt cannot read (vmdk, vhd, vhdx, vdi, …) is served as a containerDisk
 * through its qcow2 variant (`containerDiskFormat().needsVariant`): the variant VariantService
 * stores (made on the first pull, then read like any blob), so the layer wraps a stored blob as for
 * a qcow2 image. An image of a format that cannot be converted is not served as a containerDisk
 * (its artifact form still is).
 */
import { Readable } from 'node:stream';
import { EMPTY_CONFIG } from '../../formats/container-disk.js';
import type { BlobStore, ByteRange, Digest } from '../../store/blob-store.js';
import type { ImageAccess } from '../access/image-access.js';
import type { RequestContext } from '../access/authorizer.js';
import { DomainError, conflict } from '../errors.js';
import type { Image } from '../images/image.js';
import { storedBlobBody, type BlobBody } from '../images/variant-service.js';
import { canConvertFrom, parseConvertTarget } from '../images/variants.js';
import type { StoredDisk } from './container-disk-layers.js';
import type { GeneratedBlob, GeneratedContent, StoredManifest } from './oci-registry.js';
import { parseRepositoryName, type RepositoryName } from './repository-name.js';
import { artifactForm, containerDiskForm, containerDiskFormat, containerDiskName } from './vm-image-pulls.js';
import type { RegistryRepository } from './registry-repository.js';
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
const QCOW2 = parseConvertTarget('qcow2');
/**
 * How many of a repository's newest images a digest the process has not served is looked for
 * among: every blob HEAD a push sends for a blob the repository lacks comes here, and each image
 * costs a lookup or two. An older image's blobs are found again once its manifest is fetched.
 */
const LOOKUP_IMAGES = 100;

/** Where the digests of generated containerDisk layers are kept across restarts and nodes (RegistryRepository). */
export type GeneratedLayerCache = Pick<RegistryRepository, 'generatedLayer' | 'recordGeneratedLayer'>;

type ServedImage = Image & { digest: Digest; storedSize: number };

export class VmImageServing implements GeneratedContent {
  private readonly served = new Map<string, Served>();
  private readonly layerDigests = new Map<string, Digest>();

  constructor(
    private readonly imageAccess: ImageAccess,
    private readonly store: BlobStore,
    /** absent: layer digests are kept in this process only */
    private readonly layerCache?: GeneratedLayerCache,
  ) {}

  async manifest(ctx: RequestContext, repo: RepositoryName, reference: string): Promise<StoredManifest | undefined> {
    if (reference.includes(':')) {
      const s = (await this.lookup(ctx, repo, reference)) ?? undefined;
      return s?.kind === 'manifest' ? s.manifest : undefined;
    }
    const artifact = reference.endsWith('-artifact');
    const base = artifact
      ? reference.slice(0, -'-artifact'.length)
      : reference.endsWith('-containerdisk')
        ? reference.slice(0, -'-containerdisk'.length)
        : reference;
    if (base === '') return undefined;
    const found = await this.find(ctx, repo, base);
    if (!found?.digest || found.storedSize === undefined) return undefined;
    const image = { ...found, digest: found.digest, storedSize: found.storedSize };
    return artifact ? this.artifactOf(repo, image) : this.containerDiskOf(ctx, repo, image, { make: true });
  }

  /** The artifact form of the image: its manifest, its layer (the stored blob) and the empty config are remembered. */
  private artifactOf(repo: RepositoryName, image: ServedImage): StoredManifest {
    const form = artifactForm(image);
    this.remember(repo, form.layer.digest, { kind: 'blob', imageId: image.id, digest: form.layer.digest, sizeBytes: form.layer.size });
    this.remember(repo, EMPTY_CONFIG.digest as Digest, { kind: 'bytes', imageId: image.id, bytes: EMPTY_BYTES });
    return this.manifestOf(repo, image, form.manifest);
  }

  /**
   * The containerDisk form of the image (its manifest; layer and config remembered). `make`: hash
   * the layer and make the qcow2 variant when needed (a pull by tag); without it only what costs no
   * pass over the disk (a layer digest known here or in the cache, a stored variant) — undefined otherwise.
   */
  private async containerDiskOf(ctx: RequestContext, repo: RepositoryName, image: ServedImage, opts: { make: boolean }): Promise<StoredManifest | undefined> {
    const disk = await this.diskOf(ctx, image, opts);
    if (!disk) return undefined;
    const fileName = containerDiskName(image);
    const cacheKey = `${disk.digest}/${fileName}`;
    let layerDigest = this.layerDigests.get(cacheKey) ?? (await this.layerCache?.generatedLayer(disk.digest, fileName));
    if (layerDigest === undefined && !opts.make) return undefined;
    const form = await containerDiskForm(this.store, image, disk, layerDigest);
    if (layerDigest === undefined) {
      layerDigest = form.layer.digest;
      await this.layerCache?.recordGeneratedLayer(disk.digest, fileName, layerDigest);
    }
    this.layerDigests.set(cacheKey, layerDigest);
    if (this.layerDigests.size > MAX_SERVED) this.layerDigests.delete(this.layerDigests.keys().next().value!);
    const layer = form.layer;
    this.remember(repo, layer.digest, { kind: 'layer', imageId: image.id, sizeBytes: layer.size, open: (range) => layer.open(range) });
    this.remember(repo, form.config.digest, { kind: 'bytes', imageId: image.id, bytes: form.config.bytes });
    return this.manifestOf(repo, image, form.manifest);
  }

  /**
   * What was generated for `digest` in the repository, if the caller may still see its image. A
   * digest this process has not served (a restart, another node, an evicted entry) is looked for
   * among the forms of the repository's images, without hashing a disk: a client may fetch a blob
   * of a manifest it fetched before the restart.
   */
  private async lookup(ctx: RequestContext, repo: RepositoryName, digest: string): Promise<Served | undefined> {
    let s = this.served.get(key(repo, digest));
    if (!s) {
      for (const image of await this.imagesOf(ctx, repo, LOOKUP_IMAGES)) {
        this.artifactOf(repo, image);
        await this.containerDiskOf(ctx, repo, image, { make: false });
        s = this.served.get(key(repo, digest));
        if (s) break;
      }
      if (!s) return undefined;
    }
    return (await this.visible(ctx, s.imageId)) ? s : undefined;
  }

  async blob(ctx: RequestContext, repo: RepositoryName, digest: Digest): Promise<GeneratedBlob | undefined> {
    const s = await this.lookup(ctx, repo, digest);
    if (!s || s.kind === 'manifest') return undefined;
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

  /**
   * The stored disk a containerDisk of the image wraps: its own blob (qcow2, raw), else its qcow2
   * variant, made now (`make`) when there is none yet (VariantService; a streamed conversion is
   * stored as it is read, and is recorded when its stream ends). Undefined when the format cannot
   * be converted, or there is no variant and `make` is false.
   */
  private async diskOf(ctx: RequestContext, image: ServedImage, opts: { make: boolean }): Promise<StoredDisk | undefined> {
    if (!containerDiskFormat(image).needsVariant) return { digest: image.digest, sizeBytes: image.storedSize };
    if (!canConvertFrom(image.inspection?.format)) return undefined;
    const stored = async () => {
      const r = await this.imageAccess.openVariant(ctx, image.id, QCOW2, { head: true });
      return r.kind === 'blob' ? { digest: r.digest, sizeBytes: r.sizeBytes } : undefined;
    };
    const existing = await stored();
    if (existing || !opts.make) return existing;
    const made = await this.imageAccess.openVariant(ctx, image.id, QCOW2);
    if (made.kind === 'converting' && made.stream) {
      // nobody waits for these bytes but the variant's own store: the stream ends once it is recorded
      for await (const chunk of made.stream) void chunk;
    }
    const variant = await stored();
    if (!variant) throw conflict(`the qcow2 variant of image ${image.id} disappeared while it was made; pull again`);
    return variant;
  }

  /**
   * The repositories of the ready images the caller sees in these projects (undefined: every
   * project): `<project>/<repo>` for an image named `<repo>:<tag>` or `<repo>` whose name is a valid
   * repository path. Images of no project (cluster scope) have no repository name: a name's first
   * component is a project (docs/OCI.md "Names"), so they are not listed and cannot be pulled.
   */
  async repositories(ctx: RequestContext, projects: readonly string[] | undefined): Promise<string[]> {
    const out = new Set<string>();
    for (const project of projects ?? [undefined]) {
      let cursor: string | undefined;
      do {
        const page = await this.imageAccess.listImages(ctx, { project, state: ['ready'], limit: 1000, cursor });
        for (const img of page.items) {
          // a nameless image (Glance allows one) has no repository
          if (img.project === undefined || img.name === undefined || (projects && !projects.includes(img.project))) continue;
          const colon = img.name.lastIndexOf(':');
          const path = colon < 0 ? img.name : img.name.slice(0, colon);
          const tag = colon < 0 ? 'latest' : img.name.slice(colon + 1);
          const name = `${img.project}/${path}`;
          if (!TAG.test(tag) || RESERVED_TAG.test(tag)) continue;
          try {
            out.add(parseRepositoryName(name).name);
          } catch {
            // a name that is no repository path (capitals, spaces, …) is reachable through REST only
          }
        }
        cursor = page.nextCursor;
      } while (cursor !== undefined);
    }
    return [...out];
  }

  /** The newest `limit` ready images of the repository the caller sees (`<repo>:<tag>` and `<repo>`, each). */
  private async imagesOf(ctx: RequestContext, repo: RepositoryName, limit: number): Promise<ServedImage[]> {
    const path = repo.name.slice(repo.project.length + 1);
    const out: ServedImage[] = [];
    for (const name of [`${path}:*`, path]) {
      const page = await this.imageAccess.listImages(ctx, {
        project: repo.project,
        name,
        state: ['ready'],
        sort: [{ key: 'createdAt', dir: 'desc' }],
        limit,
      });
      for (const img of page.items) if (img.digest && img.storedSize !== undefined) out.push({ ...img, digest: img.digest, storedSize: img.storedSize });
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
