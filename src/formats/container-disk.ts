/**
 * KubeVirt "containerDisk": an OCI image whose layer is a tar holding one disk file in `disk/`.
 * Reading one (a push) and writing one (a pull of any stored image), pure: bytes in, bytes out.
 *
 * The convention, from the sources that define it:
 * - KubeVirt `docs/container-register-disks.md`: "serve up any VMI disk placed in the /disk
 *   directory", built `FROM scratch` + `ADD --chown=107:107 fedora25.qcow2 /disk/` (uid/gid 107 is
 *   qemu in the virt-launcher pod).
 * - KubeVirt `pkg/container-disk` `GetImage`: the one file in /disk; "no file found in folder
 *   /disk, no disk present" and "more than one file found in folder /disk, only one disk is
 *   allowed"; `pkg/disk` `VerifyImage`: only qcow2 (without a backing file) and raw.
 * - CDI `pkg/importer` (registry import): the first entry named `disk…` or `./disk…` that is not a
 *   directory and not an overlay whiteout (`.wh.`), through Go's archive/tar; the layer may be
 *   gzip or zstd compressed (OCI media types `…tar+gzip`, `…tar+zstd`).
 *
 * What we accept is the intersection, fail closed: directories `.` and `disk` (with or without
 * `./` and a trailing `/`), exactly one regular file `disk/<name>` (one path component, not a
 * whiteout, printable, ≤ 255 bytes), pax and GNU extension records (tar.ts, strict), then the
 * end-of-archive block and zero padding. Everything else is refused with the entry named:
 * an absolute or `..` path, a link, a device, a fifo, a GNU sparse file, a file outside `disk/` or
 * nested in it, a second disk, no disk, an archive that ends early or declares more bytes than it
 * holds. A layer with no entry in `disk/` at all is not a containerDisk (NOT_A_CONTAINER_DISK,
 * `isContainerDisk` false): an ordinary container layer, stored as a plain blob by the door.
 * The table of every refusal, and the pull rule, are in docs/OCI-VM-IMAGES.md.
 * Compression (gzip, zstd) is peeled before this reader by the one bounded decoder
 * (src/inspect/peel.ts); the disk's bytes then go through the one ingest path like any upload.
 *
 * Writing: `containerDiskLayout` gives the exact bytes around a stored disk — a `disk/` directory
 * header, a pax `size` record when the disk is 8 GiB or more, the file's ustar header, then after
 * the disk its padding and two zero blocks — with fixed mode (0555 / 0440), uid/gid 107, mtime 0
 * and no user or group names, so the same disk always yields the same layer bytes and digest, and
 * the total size is known before a byte is sent. The layer is an uncompressed tar
 * (`application/vnd.oci.image.layer.v1.tar`): its digest is its diff_id, ranges map straight onto
 * the stored blob, and nothing is written twice.
 */
import { createHash } from 'node:crypto';
import { FormatError } from './byte-source.js';
import { BLOCK, MAX_OCTAL_SIZE, paxRecord, TarStreamParser, ustarHeader, type TarEntry, type TarStreamLimits } from './tar.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_LAYER_TAR_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_TAR_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const DOCKER_LAYER_TAR_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const TITLE_ANNOTATION = 'org.opencontainers.image.title';
/** the empty JSON object `{}`, the config of an artifact (image-spec v1.1 "empty descriptor") */
export const EMPTY_CONFIG = {
  mediaType: OCI_EMPTY,
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
  data: 'e30=',
} as const;

/** Layer media types that are tar layers (a containerDisk's candidates); their compression is detected, not trusted. */
export const TAR_LAYER_MEDIA_TYPES: readonly string[] = [
  OCI_LAYER_TAR,
  OCI_LAYER_TAR_GZIP,
  OCI_LAYER_TAR_ZSTD,
  DOCKER_LAYER_TAR_GZIP,
  'application/vnd.docker.image.rootfs.diff.tar',
];

/** KubeVirt's directory for the disk, inside the image */
export const DISK_DIR = 'disk';
/** qemu's uid and gid in KubeVirt's virt-launcher (`ADD --chown=107:107`) */
export const QEMU_ID = 107;

export const CONTAINER_DISK_ERRORS = [
  'NOT_A_CONTAINER_DISK', // no entry of the layer is in disk/: an ordinary container layer, not a VM image
  'UNSAFE_ENTRY', // absolute or `..` path, link, device, fifo, unknown entry type
  'UNEXPECTED_ENTRY', // a file or directory other than `disk/` and its one file
  'TWO_DISKS', // a second file in disk/
  'NO_DISK', // a disk/ directory but no file in it
  'DISK_TOO_LARGE', // the disk's declared size is over the caller's limit
  'TRUNCATED', // the archive ends inside a header, an entry or after an extension record
  'TRAILING_DATA', // non-zero bytes after the end-of-archive block
  'OVER_LIMIT', // an extension record or the trailing padding over our limits
  'MALFORMED_HEADER', // bad checksum, size that is not a number, abused pax / GNU long name
  'FIELD_OUT_OF_RANGE',
] as const;
export type ContainerDiskErrorCode = (typeof CONTAINER_DISK_ERRORS)[number];

/** A containerDisk layer refused: `code` is stable, the message names the entry and what to do. */
export class ContainerDiskError extends FormatError {
  constructor(
    message: string,
    override readonly code: ContainerDiskErrorCode,
    /**
     * whether the layer had shown an entry in disk/ when it was refused: false means it is not a
     * containerDisk at all (an ordinary container layer, or not a tar), which a registry stores as
     * any other blob; true means a containerDisk that breaks the rules, which is refused
     */
    readonly isContainerDisk = true,
  ) {
    super(message, code);
    this.name = 'ContainerDiskError';
  }
}

export interface ContainerDiskFile {
  /** the entry's name as written in the tar, e.g. `./disk/fedora.qcow2` */
  path: string;
  /** the file's name in disk/, e.g. `fedora.qcow2` */
  fileName: string;
  size: number;
}

export type ContainerDiskEvent =
  | { kind: 'disk'; disk: ContainerDiskFile }
  /** the disk's next bytes: a view of the pushed chunk */
  | { kind: 'data'; bytes: Uint8Array }
  /** the archive ended and held exactly one disk */
  | { kind: 'end' };

export interface ContainerDiskLimits extends TarStreamLimits {
  /** a disk whose declared size is over this is refused before its bytes (default: no limit) */
  maxDiskBytes: number;
}

const HOW = 'a containerDisk layer holds the disk/ directory and one disk file in it (FROM scratch + ADD --chown=107:107 DISK /disk/)';

/**
 * Reads a containerDisk layer's tar (already decompressed) as it streams: `push` returns the disk's
 * header once met, then its bytes; the rest of the archive is checked as it passes, so a second
 * disk or a hostile entry after the disk fails the stream before it ends. `finish` at the end.
 *
 * A layer is a containerDisk once one of its entries is in `disk/`; from then on every rule
 * applies to every entry, those before it included (the first breach met before is kept and
 * thrown then). A layer with no entry in `disk/` ends with NOT_A_CONTAINER_DISK
 * (`isContainerDisk` false): an ordinary container layer, which is not ours to judge.
 */
export class ContainerDiskReader {
  private readonly tar: TarStreamParser;
  private readonly maxDiskBytes: number;
  private disk: ContainerDiskFile | undefined;
  private inDisk = false;
  private ended = false;
  private sawDiskEntry = false;
  /** the first breach met before any entry in disk/ */
  private pending: ContainerDiskError | undefined;

  /**
   * `firstEntryDecides`: an entry other than the root directory met before any entry in disk/ ends
   * the read at once as NOT_A_CONTAINER_DISK (`isContainerDisk` false), instead of reading the
   * whole layer to learn whether an entry in disk/ comes later — for a reader that only guesses
   * (an OCI layer read while it arrives: KubeVirt's and make-containerdisk.sh's layers begin with
   * disk/) and leaves every other layer to the full reader.
   */
  constructor(
    limits: Partial<ContainerDiskLimits> = {},
    private readonly opts: { firstEntryDecides?: boolean } = {},
  ) {
    this.tar = new TarStreamParser(limits);
    this.maxDiskBytes = limits.maxDiskBytes ?? Number.MAX_SAFE_INTEGER;
  }

  push(chunk: Uint8Array): ContainerDiskEvent[] {
    return this.events(() => this.tar.push(chunk));
  }

  /** The layer's bytes ended: NO_DISK, NOT_A_CONTAINER_DISK or TRUNCATED unless it held one disk and ended cleanly. */
  finish(): ContainerDiskEvent[] {
    return this.events(() => this.tar.finish());
  }

  private events(step: () => ReturnType<TarStreamParser['push']>): ContainerDiskEvent[] {
    let tarEvents;
    try {
      tarEvents = step();
    } catch (e) {
      if (e instanceof FormatError && !(e instanceof ContainerDiskError)) {
        throw new ContainerDiskError(`containerDisk layer: ${e.message}`, asCode(e.code), this.sawDiskEntry);
      }
      throw e;
    }
    const out: ContainerDiskEvent[] = [];
    for (const ev of tarEvents) {
      if (ev.kind === 'data') {
        // only the disk has data we pass on
        if (this.inDisk) out.push(ev);
      } else if (ev.kind === 'entry') {
        this.inDisk = false;
        const d = this.entry(ev.entry);
        if (d) {
          this.disk = d;
          this.inDisk = true;
          out.push({ kind: 'disk', disk: d });
        }
      } else if (!this.ended) {
        this.ended = true;
        if (!this.sawDiskEntry) {
          throw new ContainerDiskError(`the layer has no entry in disk/: it is not a containerDisk (${HOW})`, 'NOT_A_CONTAINER_DISK', false);
        }
        if (!this.disk) throw new ContainerDiskError(`containerDisk layer holds no disk: no file in disk/; ${HOW}`, 'NO_DISK');
        out.push({ kind: 'end' });
      }
    }
    return out;
  }

  /** Applies the rules to one entry; returns the disk when it is the disk. */
  private entry(e: TarEntry): ContainerDiskFile | undefined {
    const parts = normalName(e.name);
    // `/disk/x` and `disk/../x` are in disk/ too, for this question: a containerDisk, and refused
    const inDiskDir = normalName(e.name.replace(/^\/+/, ''))[0] === DISK_DIR;
    if (inDiskDir && !this.sawDiskEntry) {
      this.sawDiskEntry = true;
      if (this.pending) throw this.pending;
    }
    if (this.opts.firstEntryDecides && !this.sawDiskEntry && parts.length > 0) {
      throw new ContainerDiskError(`the layer's entry ${JSON.stringify(e.name)} comes before any entry in disk/ (${HOW})`, 'NOT_A_CONTAINER_DISK', false);
    }
    const verdict = this.judge(e, parts);
    if (verdict instanceof ContainerDiskError) {
      if (this.sawDiskEntry) throw verdict;
      this.pending ??= verdict;
      return undefined;
    }
    return verdict;
  }

  private judge(e: TarEntry, parts: string[]): ContainerDiskFile | ContainerDiskError | undefined {
    const shown = JSON.stringify(e.name);
    const unsafe = unsafeWhy(e);
    if (unsafe) return new ContainerDiskError(`containerDisk layer entry ${shown} is refused: ${unsafe}; ${HOW}`, 'UNSAFE_ENTRY');
    if (e.type === 'directory') {
      if (e.size !== 0) return new ContainerDiskError(`containerDisk layer directory ${shown} declares ${e.size} bytes of data`, 'MALFORMED_HEADER');
      if (parts.length === 0 || (parts.length === 1 && parts[0] === DISK_DIR)) return undefined;
      return new ContainerDiskError(`containerDisk layer has an unexpected directory ${shown}; ${HOW}`, 'UNEXPECTED_ENTRY');
    }
    // a regular file ('0', NUL, '7')
    if (parts.length !== 2 || parts[0] !== DISK_DIR) {
      return new ContainerDiskError(`containerDisk layer has a file outside disk/ or nested in it: ${shown}; ${HOW}`, 'UNEXPECTED_ENTRY');
    }
    const fileName = parts[1]!;
    if (fileName.startsWith('.wh.')) return new ContainerDiskError(`containerDisk layer has an overlay whiteout ${shown}; ${HOW}`, 'UNEXPECTED_ENTRY');
    if (!printableName(fileName)) {
      return new ContainerDiskError(
        `containerDisk disk file name ${shown} is not a printable name of 1 to 255 bytes; rename the disk file`,
        'UNEXPECTED_ENTRY',
      );
    }
    if (this.disk) {
      return new ContainerDiskError(
        `containerDisk layer holds more than one disk: ${JSON.stringify(this.disk.path)} and ${shown}; KubeVirt allows one file in disk/ — push one image per disk`,
        'TWO_DISKS',
      );
    }
    if (e.size > this.maxDiskBytes) {
      return new ContainerDiskError(
        `containerDisk disk ${shown} declares ${e.size} bytes, over the ${this.maxDiskBytes}-byte limit for one image`,
        'DISK_TOO_LARGE',
      );
    }
    return { path: e.name, fileName, size: e.size };
  }
}

function asCode(code: string): ContainerDiskErrorCode {
  return (CONTAINER_DISK_ERRORS as readonly string[]).includes(code) ? (code as ContainerDiskErrorCode) : 'MALFORMED_HEADER';
}

function unsafeWhy(e: TarEntry): string | undefined {
  const n = e.name;
  if (n.startsWith('/') || n.startsWith('\\') || /^[A-Za-z]:/.test(n)) return 'an absolute path';
  if (n.split(/[\\/]/).includes('..')) return 'a path with ".."';
  if (n.includes('\\')) return 'a path with a backslash';
  if (e.type === 'symlink' || e.type === 'hardlink') return `a ${e.type} to ${JSON.stringify(e.linkName ?? '')}`;
  if (e.type === 'chardev' || e.type === 'blockdev' || e.type === 'fifo') return `a ${e.type}`;
  if (e.type === 'other') return `an entry of tar type ${JSON.stringify(e.typeflag)}`;
  if (e.linkName !== undefined && e.type !== 'file' && e.type !== 'directory') return `a link to ${JSON.stringify(e.linkName)}`;
  return undefined;
}

/** `./disk/x`, `disk//x/` → ['disk', 'x']; `.` and `./` → []. A `.` inside a path is refused later (it stays a part). */
function normalName(name: string): string[] {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  if (n === '.') n = '';
  n = n.replace(/\/+$/, '');
  return n === '' ? [] : n.split('/');
}

// eslint-disable-next-line no-control-regex -- control characters are what this pattern refuses
const UNPRINTABLE = /[\u0000-\u001f\u007f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

function printableName(n: string): boolean {
  return n.length > 0 && n !== '.' && new TextEncoder().encode(n).length <= 255 && !UNPRINTABLE.test(n);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** The bytes of a generated containerDisk layer around the stored disk. */
export interface ContainerDiskLayout {
  /** `disk/<fileName>` */
  path: string;
  /** the disk's bytes (the stored blob's size) */
  diskSize: number;
  /** directory header, [pax size record], file header: the layer's first bytes */
  head: Uint8Array;
  /** the disk's padding to 512 bytes and the two zero blocks: the layer's last bytes */
  tail: Uint8Array;
  /** head + disk + tail */
  totalSize: number;
}

/** Fixed metadata: the same disk always yields the same bytes (and digest). */
const DIR_MODE = 0o555;
const FILE_MODE = 0o440;
const MTIME = 0;

/**
 * The layer around a disk of `diskSize` bytes named `fileName` (already a safe name: see
 * `containerDiskFileName`). Pure and cheap: the disk itself is never read here.
 */
export function containerDiskLayout(fileName: string, diskSize: number): ContainerDiskLayout {
  if (!safeFileName(fileName)) throw new RangeError(`${JSON.stringify(fileName)} is not a safe disk file name (see containerDiskFileName)`);
  if (!Number.isSafeInteger(diskSize) || diskSize < 0) throw new RangeError(`invalid disk size ${diskSize}`);
  const path = `${DISK_DIR}/${fileName}`;
  const ids = { uid: QEMU_ID, gid: QEMU_ID, mtime: MTIME };
  const blocks: Uint8Array[] = [ustarHeader({ name: `${DISK_DIR}/`, typeflag: '5', size: 0, mode: DIR_MODE, ...ids })];
  if (diskSize >= MAX_OCTAL_SIZE) {
    // the ustar size field holds 11 octal digits (< 8 GiB): larger disks carry a pax size record
    const pax = new TextEncoder().encode(paxRecord('size', String(diskSize)));
    blocks.push(ustarHeader({ name: `${DISK_DIR}/PaxHeaders/${fileName}`.slice(0, 100), typeflag: 'x', size: pax.length, mode: 0o644, ...ids }));
    blocks.push(padded(pax));
  }
  blocks.push(ustarHeader({ name: path, typeflag: '0', size: diskSize, mode: FILE_MODE, ...ids }));
  const head = concat(blocks);
  const tail = new Uint8Array(padTo(diskSize) + 2 * BLOCK);
  return { path, diskSize, head, tail, totalSize: head.length + diskSize + tail.length };
}

/** One piece of a layer range: literal bytes (head or tail) or a range of the stored disk. */
export type LayoutSegment = { kind: 'bytes'; bytes: Uint8Array } | { kind: 'disk'; start: number; end: number };

/**
 * The pieces that make layer bytes [start, end] (inclusive, as HTTP Range): head bytes, a disk
 * range (inclusive), tail bytes, in order; empty pieces are left out.
 */
export function layoutSegments(layout: ContainerDiskLayout, range?: { start: number; end: number }): LayoutSegment[] {
  const start = range?.start ?? 0;
  const end = range?.end ?? layout.totalSize - 1;
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start <= end && end < layout.totalSize)) {
    throw new RangeError(`range ${start}-${end} is outside the layer's ${layout.totalSize} bytes`);
  }
  const out: LayoutSegment[] = [];
  const h = layout.head.length;
  const d = layout.diskSize;
  if (start < h) out.push({ kind: 'bytes', bytes: layout.head.subarray(start, Math.min(h, end + 1)) });
  const ds = Math.max(start, h) - h;
  const de = Math.min(end, h + d - 1) - h;
  if (de >= ds && d > 0) out.push({ kind: 'disk', start: ds, end: de });
  if (end >= h + d) out.push({ kind: 'bytes', bytes: layout.tail.subarray(Math.max(start, h + d) - h - d, end + 1 - h - d) });
  return out;
}

const EXTENSION: Record<string, string> = { qcow2: 'qcow2', raw: 'img' };

/**
 * The name the disk gets in `disk/`: the image's file name when it is a safe one (letters,
 * digits, `._+-`, at most 94 characters so `disk/` + name fits a ustar name), else `disk.qcow2` /
 * `disk.img` by format (KubeVirt reads qcow2 and raw only; the name is never what it goes by).
 */
export function containerDiskFileName(suggested: string | undefined, format: string): string {
  const base = suggested?.split(/[\\/]/).pop();
  if (base && safeFileName(base)) return base;
  return `disk.${EXTENSION[format] ?? (format.replace(/[^a-z0-9]/g, '').slice(0, 8) || 'img')}`;
}

function safeFileName(n: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._+-]{0,93}$/.test(n) && !n.startsWith('.wh.');
}

function padTo(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

function padded(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length + padTo(b.length));
  out.set(b);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// OCI JSON

/** A JSON document as stored and served: its exact bytes, their digest and size. */
export interface JsonBlob {
  bytes: Uint8Array;
  digest: `sha256:${string}`;
  size: number;
  mediaType: string;
}

function jsonBlob(value: unknown, mediaType: string): JsonBlob {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size: bytes.length, mediaType };
}

/** Glance / uname -m architecture → OCI (Go) platform; unknown stays absent. */
const OCI_PLATFORM: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  aarch64: { architecture: 'arm64', variant: 'v8' },
  i686: { architecture: '386' },
  armv7l: { architecture: 'arm', variant: 'v7' },
  ppc64le: { architecture: 'ppc64le' },
  s390x: { architecture: 's390x' },
  riscv64: { architecture: 'riscv64' },
  mips64el: { architecture: 'mips64le' },
};

/** The OCI platform of a Glance architecture (x86_64 → amd64, aarch64 → arm64/v8); amd64 when unknown. */
export function ociPlatform(architecture: string | undefined): { os: 'linux'; architecture: string; variant?: string } {
  return { os: 'linux', ...(OCI_PLATFORM[architecture ?? ''] ?? { architecture: 'amd64' }) };
}

/**
 * The image config of a generated containerDisk: the layer's digest is its diff_id (the layer is
 * not compressed); no `created`, no history timestamps, so it only changes with the layer.
 */
export function containerDiskConfig(layerDigest: string, architecture?: string): JsonBlob {
  const p = ociPlatform(architecture);
  const config: Record<string, unknown> = { architecture: p.architecture, os: p.os };
  if (p.variant) config.variant = p.variant;
  config.config = {};
  config.rootfs = { type: 'layers', diff_ids: [layerDigest] };
  return jsonBlob(config, OCI_CONFIG);
}

/** The manifest of a generated containerDisk: config + the one uncompressed tar layer. */
export function containerDiskManifest(config: JsonBlob, layer: { digest: string; size: number }, annotations: Record<string, string> = {}): JsonBlob {
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [{ mediaType: OCI_LAYER_TAR, digest: layer.digest, size: layer.size }],
  };
  if (Object.keys(annotations).length > 0) m.annotations = sortedKeys(annotations);
  return jsonBlob(m, OCI_MANIFEST);
}

/** What oras names a pushed file's artifact type when none is given. */
export const ORAS_DEFAULT_ARTIFACT_TYPE = 'application/vnd.unknown.artifact.v1';

/**
 * The oras-style artifact of a stored image (image-spec v1.1): the empty config, the file as the
 * single layer titled with its name, the image's properties as annotations — on the layer, as an
 * `oras push --annotation-file` puts a file's entry, and on the manifest, where registry UIs and
 * `oras manifest fetch` show them. `layerMediaType`: what oras gives a file (`…layer.v1.tar`) is
 * kept as the default, so an oras pull writes the file as it was pushed.
 */
export function artifactManifest(
  layer: { digest: string; size: number; fileName: string; mediaType?: string },
  annotations: Record<string, string>,
  artifactType: string = ORAS_DEFAULT_ARTIFACT_TYPE,
): JsonBlob {
  const layerAnnotations = sortedKeys({ ...annotations, [TITLE_ANNOTATION]: layer.fileName });
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: EMPTY_CONFIG,
    layers: [{ mediaType: layer.mediaType ?? OCI_LAYER_TAR, digest: layer.digest, size: layer.size, annotations: layerAnnotations }],
  };
  if (Object.keys(annotations).length > 0) m.annotations = sortedKeys(annotations);
  return jsonBlob(m, OCI_MANIFEST);
}

function sortedKeys(o: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(o).sort()) out[k] = o[k]!;
  return out;
}

/** The media type a layer's bytes are, when it is a compressed or plain tar layer. */
export function isTarLayerMediaType(mediaType: string): boolean {
  return TAR_LAYER_MEDIA_TYPES.includes(mediaType);
}
