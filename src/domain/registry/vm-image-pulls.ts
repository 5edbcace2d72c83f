/**
 * The two OCI forms every stored image is pulled as (docs/OCI-VM-IMAGES.md "Pulls"): the oras
 * artifact (the stored blob itself as the one layer, titled, the image's properties as
 * annotations) and the KubeVirt containerDisk (a tar layer generated around the blob). Both are
 * derived from the image record and its blob alone, deterministically, so every node serves the
 * same bytes and digests; only the containerDisk layer's digest costs a pass over the blob, and the
 * door caches it by (blob digest, file name).
 */
import {
  artifactManifest,
  containerDiskConfig,
  containerDiskFileName,
  containerDiskManifest,
  OCI_LAYER_TAR,
  type JsonBlob,
} from '../../formats/container-disk.js';
import type { BlobStore, Digest } from '../../store/blob-store.js';
import { DomainError } from '../errors.js';
import type { Image } from '../images/image.js';
import { containerDiskLayerDigest, containerDiskPull, type ContainerDiskPull, type StoredDisk } from './container-disk-layers.js';
import { imageFileName, imageToAnnotations } from './vm-image-mapping.js';

/** The image fields the forms are made of. */
export type PulledImage = Pick<
  Image,
  | 'id'
  | 'name'
  | 'digest'
  | 'storedSize'
  | 'inspection'
  | 'description'
  | 'diskFormat'
  | 'containerFormat'
  | 'architecture'
  | 'osDistro'
  | 'osVersion'
  | 'osType'
  | 'minDisk'
  | 'minRam'
  | 'properties'
>;

export interface ArtifactForm {
  manifest: JsonBlob;
  /** the layer: the image's own blob */
  layer: { digest: Digest; size: number; mediaType: string; fileName: string };
}

/** The oras-style artifact of an image: nothing to compute but JSON; the layer is the stored blob. */
export function artifactForm(image: PulledImage): ArtifactForm {
  const blob = storedBlob(image);
  const layer = { digest: blob.digest, size: blob.sizeBytes, mediaType: OCI_LAYER_TAR, fileName: imageFileName(image) };
  return { manifest: artifactManifest(layer, imageToAnnotations(image)), layer };
}

/**
 * The disk format a containerDisk serves the image in: KubeVirt reads qcow2 and raw only
 * (pkg/disk VerifyImage), so a qcow2 or raw image (an ISO is raw bytes) is served as stored, and
 * anything else needs its qcow2 variant (`needsVariant`: VariantService.openVariant(id, qcow2)).
 */
export function containerDiskFormat(image: PulledImage): { format: 'qcow2' | 'raw'; needsVariant: boolean } {
  const detected = image.inspection?.format;
  if (detected === 'qcow2') return { format: 'qcow2', needsVariant: false };
  if (detected === 'raw' || detected === 'iso') return { format: 'raw', needsVariant: false };
  return { format: 'qcow2', needsVariant: true };
}

export interface ContainerDiskForm {
  /** the disk's name in disk/ */
  fileName: string;
  layer: ContainerDiskPull & { digest: Digest };
  config: JsonBlob;
  manifest: JsonBlob;
}

/**
 * The containerDisk of an image, around `blob` (the image's own blob, or its qcow2 variant when
 * `containerDiskFormat` says so). `layerDigest`: the door's cached digest of this layer (same
 * blob, same file name); without it the layer is hashed once here.
 */
export async function containerDiskForm(
  store: BlobStore,
  image: PulledImage,
  blob: StoredDisk = storedBlob(image),
  layerDigest?: Digest,
): Promise<ContainerDiskForm> {
  const fileName = containerDiskName(image);
  const pull = containerDiskPull(store, blob, fileName);
  const digest = layerDigest ?? (await containerDiskLayerDigest(pull));
  const config = containerDiskConfig(digest, image.architecture);
  const manifest = containerDiskManifest(config, { digest, size: pull.size }, imageToAnnotations(image));
  return { fileName, layer: Object.assign(pull, { digest }), config, manifest };
}

/** The disk's name in `disk/` of the image's containerDisk (it follows the served format: `win.vmdk` → `win.qcow2`). */
export function containerDiskName(image: PulledImage): string {
  const { format } = containerDiskFormat(image);
  return containerDiskFileName(imageFileName(image, format === 'raw' ? (image.diskFormat ?? 'raw') : 'qcow2'), format);
}

function storedBlob(image: PulledImage): StoredDisk {
  if (!image.digest || image.storedSize === undefined) {
    throw new DomainError('INVALID_STATE', `image ${image.id} has no data yet; upload it before pulling it`, { id: image.id });
  }
  return { digest: image.digest, sizeBytes: image.storedSize };
}
