/**
 * The OCI registry's repository port: repositories (in projects), the blobs linked to them,
 * manifests with their references and tags, and upload sessions with their received chunks. The
 * adapter (db/registry-repository.ts) stores them in the catalog database; the bytes of blobs,
 * manifests and chunks are blobs of the one store.
 */
import type { Digest } from '../../store/blob-store.js';

export interface ManifestRecord {
  repository: string;
  digest: Digest;
  mediaType: string;
  artifactType?: string;
  subject?: Digest;
  sizeBytes: number;
  /** 0 for an image manifest; an index is one more than its deepest child */
  depth: number;
  annotations?: Record<string, string>;
  createdAt: Date;
}

export interface UploadRecord {
  id: string;
  repository: string;
  /** bytes received so far */
  sizeBytes: number;
  startedAt: Date;
  updatedAt: Date;
}

export interface UploadChunk {
  offset: number;
  digest: Digest;
  sizeBytes: number;
}

/** The project's stored-bytes usage (stored + staging) around a write under the quota lock. */
export interface QuotaChange {
  /** undefined: no stored-bytes limit */
  limit?: number;
  before: number;
  after: number;
}

/** The writes that add to a project's usage, as `underQuota` hands them out (in its transaction). */
export type RegistryWrites = Pick<
  RegistryRepository,
  'ensureRepository' | 'linkedBlob' | 'linkBlob' | 'manifest' | 'putManifest' | 'upload' | 'appendChunk' | 'deleteUpload'
>;

export interface RegistryRepository {
  /**
   * Runs `write` in one transaction holding the project's quota lock — the one the REST ingest
   * takes (ImageRepository.underProjectLock) — then `check` with the project's usage before and
   * after it; a `check` that throws undoes the write. So two pushes cannot both take the last free
   * bytes, and the figure is the one the REST API checks.
   */
  underQuota<T>(project: string, write: (w: RegistryWrites) => Promise<T>, check: (q: QuotaChange) => void): Promise<T>;

  /** Creates the repository in `project` when absent. */
  ensureRepository(name: string, project: string): Promise<void>;
  repositoryExists(name: string): Promise<boolean>;
  /** Repository names after `last` in byte order, at most `limit`; only these projects (undefined: all). */
  repositories(opts: { projects?: readonly string[]; last?: string; limit: number }): Promise<string[]>;

  /** The size of a blob linked to the repository; undefined when it is not linked there. */
  linkedBlob(repository: string, digest: Digest): Promise<number | undefined>;
  linkBlob(repository: string, digest: Digest, sizeBytes: number): Promise<void>;
  /** true when it was linked */
  unlinkBlob(repository: string, digest: Digest): Promise<boolean>;

  manifest(repository: string, digest: Digest): Promise<ManifestRecord | undefined>;
  /** The manifest a tag points at. */
  tagged(repository: string, tag: string): Promise<ManifestRecord | undefined>;
  /** Records the manifest with what it references, and points `tag` at it, in one transaction. */
  putManifest(m: ManifestRecord, children: readonly Digest[], tag?: string): Promise<void>;
  /**
   * Removes the manifest and every tag pointing at it; true when it existed. Nothing is removed
   * while an index of the repository lists it: then the indexes that do (at most 10).
   */
  deleteManifest(repository: string, digest: Digest): Promise<boolean | { listedBy: Digest[] }>;
  /** true when the tag existed */
  deleteTag(repository: string, tag: string): Promise<boolean>;
  /** Every tag of the repository (the caller orders and pages). */
  tags(repository: string): Promise<string[]>;
  /** Manifests of the repository whose subject is `digest`. */
  referrers(repository: string, digest: Digest): Promise<ManifestRecord[]>;

  createUpload(u: UploadRecord): Promise<void>;
  upload(id: string): Promise<UploadRecord | undefined>;
  uploadChunks(id: string): Promise<UploadChunk[]>;
  /**
   * Appends a chunk at `chunk.offset` when the session still holds exactly that many bytes; false
   * when another chunk got there first (the caller answers 416).
   */
  appendChunk(id: string, chunk: UploadChunk, now: Date): Promise<boolean>;
  /** true when it existed */
  deleteUpload(id: string): Promise<boolean>;
  /** Deletes the sessions that received nothing since `before`; returns how many. */
  expireUploads(before: Date): Promise<number>;

  /**
   * Every digest the registry references: linked blobs, manifests, what manifests reference, and
   * the chunks of upload sessions that received something since `liveSince` (older ones have
   * expired, even if their rows are not removed yet).
   */
  referencedDigests(liveSince: Date): Promise<Set<Digest>>;
  /** The cached digest of the containerDisk layer generated around `diskDigest` as `fileName`. */
  generatedLayer(diskDigest: Digest, fileName: string): Promise<Digest | undefined>;
  recordGeneratedLayer(diskDigest: Digest, fileName: string, layerDigest: Digest): Promise<void>;
  /** Forgets the generated layers of disks that are no longer stored (garbage collection deleted them). */
  forgetGeneratedLayers(diskDigests: Digest[]): Promise<void>;
  /** Bytes the project's repositories hold: distinct linked blobs and manifests no image of the project holds, and what open uploads received. */
  projectBytes(project: string): Promise<number>;
}
