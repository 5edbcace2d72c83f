/**
 * A pushed VM image becomes an Imago image (issue 10 §3): the OCI registry's manifest-put hook
 * (`OciRegistry.whenManifestPut`, wired in app.ts). For a manifest whose layer is a disk (an oras
 * push) or a containerDisk, the layer's bytes — read back from the one store by digest, where the
 * blob push already put them — run through the one ingest path (ImageAccess.upload →
 * IngestCoordinator: inspection, verdict, virtual and stored sizes, checksums), exactly as a REST
 * upload does. The sequence is docs/OCI-VM-IMAGES.md's "The door's push path". A containerDisk
 * whose disk was ingested while its layer arrived (early-layer-ingests.ts) is not read again: that
 * outcome becomes the image through ImageAccess.adoptIngested, the same lifecycle, claims and verdict.
 *
 * Naming: the push of `<project>/<repo>:<tag>` makes the image named `<repo>:<tag>` in project
 * `<project>` (nested repository paths stay in the name: `vms/alma/disk:v1` → `alma/disk:v1` in
 * `vms`), with the property `imago.oci.reference` = `<project>/<repo>:<tag>`. That property, not
 * the name, says which image a tag made: an image someone created through REST with the same name
 * is never touched.
 *
 * Re-push of a tag: a ready image cannot take new bytes (lifecycle.ts), so every VM push creates a
 * new image; once it is ready, the images the same reference made before (older ones) are deleted.
 * The image id changes with every push; the name, the reference and the project stay.
 *
 * Refusals: a layer the verdict refuses (backing file, data file, polyglot, …), a declared format
 * the bytes are not (FORMAT_MISMATCH), a hostile containerDisk tar (`../`, two disks, links, …), or
 * annotations the image cannot take are MANIFEST_INVALID naming the finding; the hook throws, so the
 * registry records and tags nothing; the image created for the push is deleted (no record is left,
 * ready or in error; the audit log keeps the create, the refusal and the delete). Errors that are not
 * the manifest's fault (quota, size limit, storage) fail the PUT as they are, and the image is
 * deleted the same way.
 *
 * Tags ending in `-containerdisk` or `-artifact` are refused for every push (MANIFEST_INVALID):
 * the pull side derives them (vm-image-serving.ts), so a pushed tag and a generated form never collide.
 *
 * Not VM images (left as plain manifests, as any registry would): indexes, PUTs by digest (no tag to
 * name an image by; the children of a multi-platform index are pushed this way), configs,
 * signatures, SBOMs, tar layers with nothing in `disk/`.
 */
import type { Readable } from 'node:stream';
import type { Finding } from '../../formats/findings.js';
import type { InspectLimits } from '../../formats/limits.js';
import type { BlobStore, Digest } from '../../store/blob-store.js';
import type { ImageAccess } from '../access/image-access.js';
import type { RequestContext } from '../access/authorizer.js';
import { DomainError } from '../errors.js';
import type { DiskFormat, Image, ImageAttributes } from '../images/image.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import { openContainerDiskPush } from './container-disk-layers.js';
import type { EarlyLayerIngests, EarlyLayerOutcome } from './early-layer-ingests.js';
import type { ManifestPutEffect, ManifestPutEvent } from './oci-registry.js';
import { annotationsToImage } from './vm-image-mapping.js';
import { classifyVmManifest, declaredDiskFormat, decideVmLayer, notContainerDisk, vmLayerRefusal, type ManifestInvalid } from './vm-layer-verdict.js';

const LAYER_READ_BYTES = 1024 * 1024;

/** Tags the pull side derives (vm-image-serving.ts): a push may not take them. */
export const RESERVED_TAG = /-(containerdisk|artifact)$/;

/** The property that ties an image to the OCI reference whose push made it. */
export const OCI_REFERENCE_PROPERTY = 'imago.oci.reference';

export interface VmImagePushSettings {
  maxImageBytes: number;
  inspectLimits: Partial<InspectLimits>;
}

export interface VmImagePushLog {
  warn(obj: object, msg: string): void;
}

export class VmImagePushes {
  constructor(
    private readonly images: ImageCatalog,
    private readonly imageAccess: ImageAccess,
    private readonly store: BlobStore,
    private readonly settings: VmImagePushSettings,
    private readonly log?: VmImagePushLog,
    /** containerDisk layers ingested while they arrived (their outcome replaces reading the layer back) */
    private readonly early?: EarlyLayerIngests,
  ) {}

  /** What this process did, for tests: layers read back from the store by the hook. */
  readonly counts = { layerReads: 0 };

  /**
   * The manifest-put hook: a VM push becomes a ready image, or the PUT fails (MANIFEST_INVALID
   * naming the finding). The effect it returns deletes the image when the registry cannot record
   * the manifest after all, and replaces the tag's older images once it has.
   */
  async onManifestPut(e: ManifestPutEvent): Promise<ManifestPutEffect | void> {
    if (e.tag !== undefined && RESERVED_TAG.test(e.tag)) {
      throw new DomainError(
        'MANIFEST_INVALID',
        `tag "${e.tag}" ends in a suffix Imago reserves for the forms it serves every image in (-containerdisk, -artifact); push under another tag`,
        { tag: e.tag },
      );
    }
    if (e.manifest.kind !== 'image' || e.tag === undefined) return;
    const kind = classifyVmManifest(e.manifest);
    if ('code' in kind) throw manifestInvalid(kind);
    if (kind.kind === 'other') return;
    const layer = e.layers[kind.layer]!;
    let mapped;
    try {
      mapped = annotationsToImage({ manifest: e.manifest.annotations, layer: layer.annotations });
    } catch (err) {
      throw refusalOr(err);
    }
    const declared = declaredDiskFormat({ annotations: { ...e.manifest.annotations, ...layer.annotations }, mediaType: layer.mediaType });
    if (declared && 'code' in declared) throw manifestInvalid(declared);

    // a containerDisk layer may have been ingested as it arrived (early-layer-ingests.ts): its
    // outcome is the disk's, nothing is read again; a layer whose early ingest decided nothing is read back
    const early = kind.kind === 'container-disk' ? await this.earlyOutcome(layer.digest, { ...mapped.attributes }) : undefined;
    if (early?.kind === 'refused') throw manifestInvalid(early.refusal);

    let source: Readable | undefined;
    let body: Readable | undefined;
    let size = layer.size;
    let diskName: string | undefined;
    try {
      if (early) {
        size = early.diskSize;
        diskName = early.fileName;
      } else {
        // 1 MiB reads: each chunk costs the decoder, the tar reader and the ingest's slot copy a step
        // (64 KiB reads: ~0.2 s of the event loop per 256 MiB pushed, in a profile on a loaded machine)
        source = await this.store.read(layer.digest, undefined, { chunkBytes: LAYER_READ_BYTES });
        this.counts.layerReads++;
        body = source;
        if (kind.kind === 'container-disk') {
          try {
            const disk = await openContainerDiskPush(source, { inspectLimits: this.settings.inspectLimits, maxDiskBytes: this.settings.maxImageBytes });
            ({ body, size } = disk);
            diskName = disk.fileName;
          } catch (err) {
            if (notContainerDisk(err)) return;
            throw refusalOr(err);
          }
        }
      }
      const reference = `${e.repository.name}:${e.tag}`;
      const attributes: Partial<ImageAttributes> = { ...mapped.attributes };
      // the declaration is the ingest's claim: ingest itself refuses bytes of another format (FORMAT_MISMATCH)
      if (declared && attributes.diskFormat === undefined) attributes.diskFormat = declared.format as DiskFormat;
      attributes.properties = { ...attributes.properties, [OCI_REFERENCE_PROPERTY]: reference };
      if (diskName !== undefined && mapped.fileName === undefined) attributes.properties['org.opencontainers.image.title'] = diskName;
      const name = reference.slice(e.repository.project.length + 1);
      const { image } = await this.imageAccess.createImage(e.ctx, { ...attributes, name }, { project: e.repository.project });
      // the containerDisk reader's refusal after the disk began (`../`, a second disk) reaches the
      // ingest as a read error, which it reports as an interrupted upload: keep it to name it
      let bodyError: unknown;
      const from = body;
      const watched = (async function* () {
        try {
          if (from) yield* from;
        } catch (err) {
          bodyError = err;
          throw err;
        }
      })();
      let stored: Image;
      try {
        if (early) {
          // the disk's bytes are staged and committed already: the same lifecycle, quota, claim and verdict, no bytes
          stored = await this.imageAccess.adoptIngested(e.ctx, image.id, early.outcome, { announcedSize: size });
        } else {
          // an oras disk file becomes the image as it is: the layer blob the project already holds (counted once)
          const expectDigest = kind.kind === 'container-disk' ? undefined : layer.digest;
          stored = await this.imageAccess.upload(e.ctx, image.id, watched, { announcedSize: size, expectDigest });
        }
        const decision = decideVmLayer(declared, { format: stored.inspection?.format ?? 'raw', findings: (stored.inspection?.findings ?? []) as Finding[] });
        if (!decision.accept) throw manifestInvalid(decision);
      } catch (err) {
        await this.discard(e.ctx, image.id);
        const refusal = bodyError === undefined ? undefined : vmLayerRefusal(bodyError);
        throw refusal ? manifestInvalid(refusal) : refusalOr(err);
      }
      return {
        undo: () => this.discard(e.ctx, image.id),
        recorded: () => this.replaceOlder(e.ctx, e.repository.project, reference, stored),
      };
    } finally {
      body?.destroy();
      source?.destroy();
    }
  }

  /**
   * The layer's early outcome when it can stand for reading the layer: a refusal, or an ingest
   * whose disk blob is still stored. An image claimed to be an OVA (container_format ova) is judged
   * by the full path: its claim reads the OVA's disks, which the early ingest did not know to.
   */
  private async earlyOutcome(layer: Digest, attributes: Partial<ImageAttributes>): Promise<EarlyLayerOutcome | undefined> {
    if (!this.early || attributes.containerFormat === 'ova') return undefined;
    const o = await this.early.outcome(layer);
    if (o?.kind !== 'ingested' || o.outcome.kind !== 'stored') return o;
    // GC on another node, or a store cleaned by hand: read the layer back instead
    const blob = await this.store.stat(o.outcome.blob.digest);
    return blob?.sizeBytes === o.outcome.blob.sizeBytes ? o : undefined;
  }

  /** The image made for a refused push goes: the PUT failed, so nothing of it stays. */
  private async discard(ctx: RequestContext, id: string): Promise<void> {
    try {
      await this.imageAccess.deleteImage(ctx, id);
    } catch (err) {
      if (err instanceof DomainError && err.code === 'IMAGE_NOT_FOUND') return;
      try {
        await this.images.delete(id);
      } catch (again) {
        this.log?.warn({ err: again, id }, 'the image of a refused OCI push could not be deleted');
      }
    }
  }

  /** A re-push of a tag replaces the images earlier pushes of it made. */
  private async replaceOlder(ctx: RequestContext, project: string, reference: string, current: Image): Promise<void> {
    let page;
    try {
      page = await this.images.list({ project, properties: { [OCI_REFERENCE_PROPERTY]: reference }, limit: 1000 });
    } catch (err) {
      // the manifest is recorded and tagged: the PUT succeeded; the older images stay (they say which push made them)
      this.log?.warn({ err, reference }, 'the images earlier pushes of this tag made could not be listed for replacement');
      return;
    }
    for (const old of page.items) {
      if (old.id === current.id || old.createdAt > current.createdAt) continue;
      try {
        await this.imageAccess.deleteImage(ctx, old.id);
      } catch (err) {
        // a locked or in-use image stays (it says which push made it); the new one is ready anyway
        this.log?.warn({ err, id: old.id, reference }, 'an image an earlier push of this tag made could not be replaced');
      }
    }
  }
}

function manifestInvalid(r: ManifestInvalid): DomainError {
  return new DomainError('MANIFEST_INVALID', r.message, r.findings ? { findings: r.findings } : {});
}

/** A refusal of the layer → MANIFEST_INVALID; anything else (quota, storage, …) as it is. */
function refusalOr(err: unknown): unknown {
  if (err instanceof DomainError && err.code === 'MANIFEST_INVALID') return err;
  const refusal = vmLayerRefusal(err);
  return refusal ? manifestInvalid(refusal) : err;
}
