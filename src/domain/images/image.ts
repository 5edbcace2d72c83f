/**
 * The image aggregate and its repository port. Vocabularies follow the anchors: OpenNebula's
 * image types, Glance's disk and container formats, Deckhouse's unpacked size (`virtualSize`).
 */
import type { WritableDiskFormat } from '../../disk/disk-formats.js';
import type { Digest } from '../../store/blob-store.js';
import type { MemberStatus, Visibility } from '../access/policy.js';
import type { ImageState } from './lifecycle.js';

export const IMAGE_TYPES = ['OS', 'CDROM', 'DATABLOCK', 'KERNEL', 'RAMDISK', 'CONTEXT'] as const;
export type ImageType = (typeof IMAGE_TYPES)[number];

export const DISK_FORMATS = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'iso', 'ploop', 'aki', 'ari', 'ami', 'gpt'] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];

/** Formats Imago can convert an image to (download as, or store as on import): disk writers' formats (ova, a container, is not offered). */
export const CONVERT_FORMATS = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi'] as const satisfies readonly WritableDiskFormat[];
export type ConvertFormat = (typeof CONVERT_FORMATS)[number];

export const CONTAINER_FORMATS = ['bare', 'ova', 'ovf', 'docker', 'aki', 'ari', 'ami', 'compressed'] as const;
export type ContainerFormat = (typeof CONTAINER_FORMATS)[number];

/**
 * The whole-image hashes every ingest computes in its one pass, besides the optional md5: sha256
 * (the digest, the blob's address) and sha512. What Glance's `os_hash_algo` may name.
 */
export const OS_HASH_ALGOS = ['sha512', 'sha256'] as const;
export type OsHashAlgo = (typeof OS_HASH_ALGOS)[number];

export interface Checksums {
  /** hex md5 (Glance `checksum`); only when md5 is enabled in config */
  md5?: string;
  /** hex sha512 (Glance `os_hash_value` with `os_hash_algo` sha512) */
  sha512?: string;
}

/** What the format engine found when the bytes came in (stored as JSON). */
export interface InspectionSummary {
  format: string;
  subformat?: string;
  compression?: string[];
  details: Record<string, unknown>;
  findings: { code: string; severity: string; message: string }[];
}

export interface ImageAttributes {
  name?: string;
  description?: string;
  type: ImageType;
  diskFormat?: DiskFormat;
  containerFormat?: ContainerFormat;
  architecture?: string;
  osDistro?: string;
  osVersion?: string;
  osType?: string;
  /** GiB (Glance min_disk) */
  minDisk: number;
  /** MiB (Glance min_ram) */
  minRam: number;
  persistent: boolean;
  /** refuses deletion until cleared (Glance `protected`); absent = false */
  protected?: boolean;
  /** left out of default listings (Glance `os_hidden`); absent = false */
  hidden?: boolean;
  properties: Record<string, string>;
  tags: string[];
}

export interface Image extends ImageAttributes {
  id: string;
  /** owning project; absent = cluster scope (Deckhouse ClusterVirtualImage) */
  project?: string;
  /** the user who created the image */
  owner?: string;
  visibility: Visibility;
  /** OpenNebula-style permission bits (owner/group/other × use/manage/admin), e.g. 0o660 */
  perms: number;
  /** bytes reserved against the project quota by the running ingest (0 when none) */
  reservedBytes: number;
  state: ImageState;
  /** why the image is in `error` (or was refused), for humans */
  stateReason?: string;
  /** 0..100 while importing, when the total is known */
  progress?: number;
  /** how the image's bytes came (or are coming) in: an upload, a URL import, or a stage (Glance's `PUT …/stage`, imported later) */
  ingestKind?: 'upload' | 'import' | 'stage';
  /** the upload or import currently writing this image (one at a time) */
  ingestId?: string;
  lockReason?: 'clone' | 'snapshot' | 'convert';
  usedBy: number;
  digest?: Digest;
  storedSize?: number;
  virtualSize?: number;
  checksums: Checksums;
  inspection?: InspectionSummary;
  createdAt: Date;
  updatedAt: Date;
  /** bumped on every change: optimistic concurrency */
  version: number;
}

export const IMAGE_SORT_KEYS = ['name', 'createdAt', 'updatedAt', 'storedSize', 'virtualSize', 'state', 'diskFormat', 'containerFormat', 'id'] as const;
export type ImageSortKey = (typeof IMAGE_SORT_KEYS)[number];

/** One key of a listing's order; an absent value (no disk format, no size yet) sorts before every present one. */
export interface ImageSort {
  key: ImageSortKey;
  dir: 'asc' | 'desc';
}

export interface ImageQuery {
  /** exactly this name, or a prefix when it ends with `*` */
  name?: string;
  /** any of these names exactly (Glance's `name=in:a,b`) */
  names?: string[];
  state?: ImageState[];
  type?: ImageType[];
  diskFormat?: DiskFormat[];
  /** every tag must be present */
  tags?: string[];
  /** every property must equal */
  properties?: Record<string, string>;
  containerFormat?: ContainerFormat[];
  /** stored size bounds in bytes, inclusive (Glance size_min/size_max) */
  sizeMin?: number;
  sizeMax?: number;
  protected?: boolean;
  /** true: hidden images only; false: visible ones only; absent: both */
  hidden?: boolean;
  /** start after this image (Glance's marker: an image id) in the chosen sort; an unknown id is INVALID_REQUEST */
  marker?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  updatedAfter?: Date;
  updatedBefore?: Date;
  /** the order, key by key (Glance's `sort=name:asc,created_at:desc`); the id breaks ties; default createdAt asc */
  sort?: ImageSort[];
  /** only images of this project */
  project?: string;
  visibility?: Visibility[];
  /** what the caller may see (absent: everything — internal callers only) */
  access?: AccessScope;
  /** only images shared with one of the caller's projects with this member status */
  memberStatus?: MemberStatus;
  /**
   * Glance's member_status: which shared images of other projects are listed along with the rest
   * (default: the accepted ones; `all`: every status).
   */
  sharedStatus?: MemberStatus | 'all';
  /** page size, 1..1000 */
  limit: number;
  /** opaque, from a previous page's nextCursor */
  cursor?: string;
}

/** The visibility filter of one principal, in the terms the repository can turn into SQL. */
export interface AccessScope {
  anonymous: boolean;
  user?: string;
  /** projects where the caller is admin (sees everything in them) */
  adminProjects: string[];
  /** projects where the caller is reader or writer (permission bits decide) */
  memberProjects: string[];
}

export interface ImagePage {
  items: Image[];
  nextCursor?: string;
}

/** Fields a state change may set along with the state (undefined = unchanged, null = cleared). */
export type ImagePatch = {
  [K in Exclude<keyof Image, 'id' | 'createdAt' | 'updatedAt' | 'version'>]?: Image[K] | null;
};

export interface ImageMember {
  imageId: string;
  project: string;
  status: MemberStatus;
  createdAt: Date;
  updatedAt: Date;
}

export interface ImageRepository {
  /**
   * Inserts a new image. With an idempotency key already used for the same request hash, returns
   * the image made the first time (`replayed: true`); with a different hash, IDEMPOTENCY_MISMATCH.
   */
  create(image: Image, idempotency?: { key: string; requestHash: string }): Promise<{ image: Image; replayed: boolean }>;
  get(id: string): Promise<Image | undefined>;
  list(query: ImageQuery): Promise<ImagePage>;
  /**
   * Applies `patch` if the image exists, its state is one of `fromStates` (when given) and its
   * version equals `expectedVersion` (when given). Returns the updated image, or undefined when a
   * condition failed (the caller re-reads and explains). Bumps version and updatedAt.
   */
  update(id: string, patch: ImagePatch, cond?: { fromStates?: readonly ImageState[]; expectedVersion?: number }): Promise<Image | undefined>;
  /** Removes the record; true when it existed. */
  remove(id: string): Promise<boolean>;
  /** Images in any of these states (start-up recovery). */
  inStates(states: readonly ImageState[]): Promise<Image[]>;
  /** Every digest some image (or variant) references: GC keeps these. */
  referencedDigests(): Promise<Set<Digest>>;
  count(): Promise<number>;
  /** Member status of each of these projects on one image. */
  members(imageId: string): Promise<ImageMember[]>;
  /** Adds (pending) or keeps a member; returns it. */
  addMember(imageId: string, project: string): Promise<ImageMember>;
  setMemberStatus(imageId: string, project: string, status: MemberStatus): Promise<ImageMember | undefined>;
  removeMember(imageId: string, project: string): Promise<boolean>;
  /** Runs `fn` with the project's quota locked: check-then-write on its usage cannot race. */
  underProjectLock<T>(project: string, fn: (tx: ProjectTx) => Promise<T>): Promise<T>;
  /** `viewer`: count `sharedBytes` only against images this scope may read (absent: all images) */
  usage(project: string, viewer?: AccessScope): Promise<ProjectUsage>;
  /** The stored variant of an image in `format` with these canonical writer options, if any. */
  variant(imageId: string, format: string, optionsKey: string): Promise<ImageVariant | undefined>;
  variants(imageId: string): Promise<ImageVariant[]>;
  /** Records (or replaces) a variant; false when the image no longer exists (its blob is then GC's). */
  putVariant(v: ImageVariant): Promise<boolean>;
  /**
   * Convert-on-import's last step, in one transaction: applies `patch` (the converted blob becomes
   * the image's) under `cond` and records `keep` (the original) as a variant. Undefined when a
   * condition failed.
   */
  finishConversion(
    id: string,
    patch: ImagePatch,
    cond: { fromStates?: readonly ImageState[]; expectedVersion?: number },
    keep: ImageVariant,
  ): Promise<Image | undefined>;
  /** A project's convert-on-import target: null = the server's setting; undefined = no such project. */
  projectConvertTo(project: string): Promise<string | null | undefined>;
  /** false when the project does not exist */
  setProjectConvertTo(project: string, target: string | null): Promise<boolean>;
}

/** A converted form of an image, stored as its own content-addressed blob (variants.ts). */
export interface ImageVariant {
  imageId: string;
  /** writer format name: raw, qcow2, vmdk, vhd, vhdx, vdi */
  format: string;
  /** canonical writer options ("k=v,k=v" sorted by key); '' = the writer's defaults */
  optionsKey: string;
  digest: Digest;
  sizeBytes: number;
  createdAt: Date;
}

/** A project's quota limits and usage, read under its lock. */
export interface ProjectTx {
  limits: { images?: number; storedBytes?: number; stagingBytes?: number; imports?: number };
  /**
   * `exceptImage`: leave that image out; `asHolding`: count as if it held that blob already (an OCI
   * blob of the project it will hold then counts once, as the image: db/registry-repository.ts).
   */
  usage(exceptImage?: string, asHolding?: Digest): Promise<ProjectUsage>;
  /** Inserts like `create`; `check` runs after an idempotent replay was ruled out, before the insert. */
  create(image: Image, idempotency?: { key: string; requestHash: string }, check?: () => Promise<void>): Promise<{ image: Image; replayed: boolean }>;
  update(id: string, patch: ImagePatch, cond?: { fromStates?: readonly ImageState[]; expectedVersion?: number }): Promise<Image | undefined>;
}

/**
 * What counts against a project's quota (docs/ACCESS.md "Quotas"): every image record that is not
 * being deleted; the stored size of every image holding data, in full even when its bytes are
 * shared with another image; the bytes reserved by ingests running now; imports running now.
 */
export interface ProjectUsage {
  images: number;
  storedBytes: number;
  stagingBytes: number;
  imports: number;
  /** images holding data (their stored bytes count) */
  imagesWithData: number;
  /** stored bytes that another image the viewer may read also holds (shown, still counted) */
  sharedBytes: number;
}
