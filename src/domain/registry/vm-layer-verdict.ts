/**
 * Which layer of a pushed manifest is a VM disk, what it declares itself to be, and whether the
 * bytes the ingest saw agree (issue 10 §3): the decisions the OCI door turns into a manifest PUT's
 * answer. A refusal is always MANIFEST_INVALID with a message naming the finding; nothing here
 * stores or tags anything.
 *
 * Declared format (two that disagree are a refusal, never "first wins"):
 * 1. `org.openstack.glance.disk_format` (layer annotation over manifest annotation),
 * 2. the layer's media type, when it is a disk image type (table below).
 * A file name's extension declares nothing: no consumer acts on it (KubeVirt and qemu probe the
 * bytes), Ubuntu's `.img` are qcow2, and make-containerdisk.sh names every disk `disk.qcow2`.
 * The claim is checked against the detected format by the format engine's own table (a `raw` claim
 * accepts an ISO, nothing accepts a format a hypervisor would interpret: claimFindings). The door
 * best passes it as the image's diskFormat before the upload, so ingest itself refuses a mismatch
 * (FORMAT_MISMATCH in the report); `decideVmLayer` checks again for a door that did not.
 */
import type { FormatName } from '../../formats/format.js';
import type { Finding } from '../../formats/findings.js';
import { claimFindings } from '../../formats/inspect-source.js';
import { ContainerDiskError, isTarLayerMediaType, OCI_CONFIG, TITLE_ANNOTATION } from '../../formats/container-disk.js';
import { streamFinding } from '../../inspect/inspect-stream.js';
import { DecompressionError, DecompressionLimitError, DecoderMissingError } from '../../io/decompress.js';
import { DomainError } from '../errors.js';
import { GLANCE_PREFIX } from './vm-image-mapping.js';

/** The OCI distribution error code every refusal here becomes. */
export interface ManifestInvalid {
  code: 'MANIFEST_INVALID';
  message: string;
  /** the format engine's findings, when the refusal is one */
  findings?: Finding[];
}

/**
 * Disk image media types (freedesktop shared-mime-info's names, and `application/vnd.…` forms seen
 * in the wild) → the Glance disk_format they declare. Media types are claims, like the annotation.
 */
export const DISK_MEDIA_TYPES: Readonly<Record<string, string>> = {
  'application/x-qemu-disk': 'qcow2',
  'application/vnd.qemu.qcow2': 'qcow2',
  'application/x-qcow2': 'qcow2',
  'application/x-raw-disk-image': 'raw',
  'application/vnd.efi.img': 'raw',
  'application/x-vmdk-disk': 'vmdk',
  'application/x-vmdk': 'vmdk',
  'application/x-vhd-disk': 'vhd',
  'application/x-vhdx-disk': 'vhdx',
  'application/x-virtualbox-vdi': 'vdi',
  'application/x-vdi-disk': 'vdi',
  'application/x-cd-image': 'iso',
  'application/x-iso9660-image': 'iso',
  'application/vnd.efi.iso': 'iso',
};

export interface DeclaredFormat {
  /** a Glance / qemu format name as declared (lower case) */
  format: string;
  /** where it was declared, for messages: `annotation "org.openstack.glance.disk_format"` */
  source: string;
}

export interface LayerDeclarations {
  /** the manifest's and the layer's annotations merged (the layer's win) */
  annotations?: Record<string, string>;
  mediaType?: string;
}

/**
 * The format a disk layer declares, or undefined when nothing declares one (detection decides).
 * Two declarations that disagree → MANIFEST_INVALID.
 */
export function declaredDiskFormat(d: LayerDeclarations): DeclaredFormat | ManifestInvalid | undefined {
  const claims: DeclaredFormat[] = [];
  const annotated = d.annotations?.[`${GLANCE_PREFIX}disk_format`];
  if (annotated !== undefined) claims.push({ format: annotated.toLowerCase(), source: `annotation "${GLANCE_PREFIX}disk_format"` });
  const byType = d.mediaType ? DISK_MEDIA_TYPES[d.mediaType.toLowerCase()] : undefined;
  if (byType) claims.push({ format: byType, source: `media type ${d.mediaType}` });
  const first = claims[0];
  if (!first) return undefined;
  for (const c of claims.slice(1)) {
    if (!sameClaim(first.format, c.format)) {
      return {
        code: 'MANIFEST_INVALID',
        message: `the disk layer declares two formats: ${first.format} (${first.source}) and ${c.format} (${c.source}); declare the one it is`,
      };
    }
  }
  return first;
}

/** `raw` and its aliases are one claim; anything else must be the same name. */
function sameClaim(a: string, b: string): boolean {
  const raw = ['raw', 'img', 'gpt', 'aki', 'ari', 'ami'];
  return a === b || (raw.includes(a) && raw.includes(b));
}

/** What ingest found (ImageReport, or the image's stored InspectionSummary). */
export interface IngestFacts {
  format: string;
  findings: readonly Finding[];
  verdict?: 'safe' | 'refused';
}

export type VmLayerDecision = { accept: true } | ({ accept: false } & ManifestInvalid);

/**
 * Accept, or MANIFEST_INVALID naming the finding: the verdict refused the bytes (backing file,
 * data file, extents outside, polyglot, …), or the declared format is not the detected one.
 */
export function decideVmLayer(declared: DeclaredFormat | undefined, facts: IngestFacts): VmLayerDecision {
  const errors = facts.findings.filter((f) => f.severity === 'error');
  if (errors.length > 0 || facts.verdict === 'refused') {
    return { accept: false, code: 'MANIFEST_INVALID', message: `the disk layer is refused: ${describe(errors)}`, findings: errors };
  }
  if (declared) {
    const mismatch = claimFindings(declared.format, facts.format as FormatName);
    if (mismatch.length > 0) {
      const f = {
        ...mismatch[0]!,
        message: `the disk layer declares ${declared.format} (${declared.source}) but its bytes are ${facts.format}; declare the format it really is, or convert it (imago convert -O ${declared.format}), and push again`,
      };
      return { accept: false, code: 'MANIFEST_INVALID', message: `the disk layer is refused: ${f.code}: ${f.message}`, findings: [f] };
    }
  }
  return { accept: true };
}

function describe(errors: readonly Finding[]): string {
  const first = errors[0];
  if (!first) return 'the format engine refused it';
  return `${first.code}: ${first.message}${
    errors.length > 1
      ? ` (and ${errors.length - 1} more: ${errors
          .slice(1)
          .map((f) => f.code)
          .join(', ')})`
      : ''
  }`;
}

/**
 * An error out of a VM layer's push (the containerDisk reader, the layer's decompression, the
 * ingest's refusal) as the manifest PUT's MANIFEST_INVALID, or undefined when it is not the
 * manifest's fault (quota, size limit, storage down, a client gone: the door maps those as usual).
 * A ContainerDiskError with `isContainerDisk` false is not a refusal either: the layer is an
 * ordinary blob (`notContainerDisk` says so).
 */
export function vmLayerRefusal(e: unknown): ManifestInvalid | undefined {
  if (e instanceof ContainerDiskError) {
    if (!e.isContainerDisk) return undefined;
    return { code: 'MANIFEST_INVALID', message: `${e.code}: ${e.message}` };
  }
  if (e instanceof DecompressionLimitError || e instanceof DecompressionError || e instanceof DecoderMissingError) {
    const f = streamFinding(e);
    return { code: 'MANIFEST_INVALID', message: `the layer is refused: ${f.code}: ${f.message}`, findings: [f] };
  }
  if (e instanceof DomainError) {
    if (e.code === 'UNSAFE_IMAGE') {
      const findings = Array.isArray(e.details.findings) ? (e.details.findings as Finding[]) : [];
      return { code: 'MANIFEST_INVALID', message: `the disk layer is refused: ${describe(findings.filter((f) => f.severity === 'error'))}`, findings };
    }
    if (e.code === 'EMPTY_IMAGE') return { code: 'MANIFEST_INVALID', message: `the disk layer is empty: ${e.message}` };
    if (e.code === 'INVALID_REQUEST' && typeof e.details.annotation === 'string') return { code: 'MANIFEST_INVALID', message: e.message };
  }
  return undefined;
}

/** The layer turned out not to be a containerDisk: store it as any other blob. */
export function notContainerDisk(e: unknown): boolean {
  return e instanceof ContainerDiskError && !e.isContainerDisk;
}

/** A manifest (OCI image manifest or Docker schema 2), as much of it as the classification reads. */
export interface ManifestShape {
  artifactType?: string;
  config?: { mediaType?: string };
  layers?: readonly { mediaType: string; annotations?: Record<string, string> }[];
  annotations?: Record<string, string>;
}

const IMAGE_CONFIGS = [OCI_CONFIG, 'application/vnd.docker.container.image.v1+json'];
const DISK_EXTENSION = /\.(qcow2|raw|img|vmdk|vhdx?|vdi|iso)$/i;

export type VmManifestKind =
  /** one layer is the disk file itself (an oras push): ingest it as it is */
  | { kind: 'disk-file'; layer: number }
  /** the last layer may be a containerDisk tar: open it with openContainerDiskPush (NOT_A_CONTAINER_DISK → plain) */
  | { kind: 'container-disk'; layer: number }
  /** not a VM image: store the manifest and its blobs as any registry would */
  | { kind: 'other' };

/**
 * Which kind of push a manifest is. A layer is a disk file when it says so: a disk media type, or
 * the Glance disk_format / an EGI annotation (on it or the manifest) together with a file title, or
 * a title with a disk image extension. More than one such layer is MANIFEST_INVALID (one image per
 * manifest). An image manifest (image config) whose last layer is a tar layer is a containerDisk
 * candidate (KubeVirt's disk is in the last layer of `FROM scratch` + `ADD`).
 */
export function classifyVmManifest(m: ManifestShape): VmManifestKind | ManifestInvalid {
  const layers = m.layers ?? [];
  const vmAnnotated = (a: Record<string, string> | undefined) => Object.keys(a ?? {}).some((k) => k.startsWith(GLANCE_PREFIX) || k.startsWith('eu.egi.cloud.'));
  const disks: number[] = [];
  layers.forEach((l, i) => {
    const title = l.annotations?.[TITLE_ANNOTATION];
    const byType = DISK_MEDIA_TYPES[l.mediaType.toLowerCase()] !== undefined;
    const byAnnotation = title !== undefined && (vmAnnotated(l.annotations) || (layers.length === 1 && vmAnnotated(m.annotations)));
    const byName = title !== undefined && DISK_EXTENSION.test(title);
    if (byType || byAnnotation || byName) disks.push(i);
  });
  if (disks.length > 1) {
    const names = disks.map((i) => layers[i]!.annotations?.[TITLE_ANNOTATION] ?? `layer ${i}`);
    return { code: 'MANIFEST_INVALID', message: `the manifest has ${disks.length} disk layers (${names.join(', ')}); push one image per manifest` };
  }
  if (disks.length === 1) return { kind: 'disk-file', layer: disks[0]! };
  const last = layers.length - 1;
  if (last >= 0 && IMAGE_CONFIGS.includes(m.config?.mediaType ?? '') && isTarLayerMediaType(layers[last]!.mediaType)) {
    return { kind: 'container-disk', layer: last };
  }
  return { kind: 'other' };
}
