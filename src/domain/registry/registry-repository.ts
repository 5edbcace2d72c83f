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

export interface RegistryRepository {
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
  /** Removes the manifest and every tag pointing at it; true when it existed. */
  deleteManifest(repository: string, digest: Digest): Promise<boolean>;
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
  /** Bytes the project's repositories hold (linked blobs, manifests, chunks of open uploads), counted per repository as the REST API counts per image. */
  projectBytes(project: string): Promise<number>;
}
