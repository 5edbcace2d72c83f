/**
 * The catalog's tables as Kysely sees them (both dialects). Sizes are numbers (exact to 2^53).
 * Columns holding one of the domain's vocabularies are typed with its union: the database returns
 * plain strings, and only the code writes these columns, so a row read back is already the union.
 */
import type { ColumnType, Generated } from 'kysely';
import type { Role, MemberStatus, Visibility } from '../domain/access/policy.js';
import type { Grant, TokenRecord } from '../domain/access/access-repository.js';
import type { ContainerFormat, DiskFormat, Image, ImageType } from '../domain/images/image.js';
import type { JobKind, JobState } from '../domain/jobs/job-queue.js';
import type { ImageState } from '../domain/images/lifecycle.js';
import type { Digest } from '../store/blob-store.js';

export interface ImagesTable {
  id: string;
  name: string;
  description: string | null;
  type: ImageType;
  disk_format: DiskFormat | null;
  container_format: ContainerFormat | null;
  architecture: string | null;
  os_distro: string | null;
  os_version: string | null;
  os_type: string | null;
  min_disk: number;
  min_ram: number;
  persistent: number;
  /** 1: Glance `protected` (migration 0008; defaults to 0) */
  is_protected: Generated<number>;
  /** 1: Glance `os_hidden` (migration 0008; defaults to 0) */
  hidden: Generated<number>;
  properties: string;
  tags: string;
  state: ImageState;
  state_reason: string | null;
  progress: number | null;
  ingest_kind: NonNullable<Image['ingestKind']> | null;
  ingest_id: string | null;
  lock_reason: NonNullable<Image['lockReason']> | null;
  used_by: number;
  digest: Digest | null;
  stored_size: number | null;
  virtual_size: number | null;
  checksum_md5: string | null;
  checksum_sha512: string | null;
  inspection: string | null;
  /** milliseconds since the epoch: the same exact integer in both dialects, and keyset-friendly */
  created_at: number;
  updated_at: number;
  version: number;
  /** owning project; null = cluster scope */
  project: string | null;
  /** the user who created it (OpenNebula's owner) */
  owner: string | null;
  visibility: Visibility;
  /** OpenNebula-style bits owner/group/other × use/manage/admin, e.g. 0o660 */
  perms: number;
  /** bytes reserved against the project's quota by the ingest running now */
  reserved_bytes: number;
}

export interface ImageTagsTable {
  image_id: string;
  tag: string;
}

export interface ImagePropertiesTable {
  image_id: string;
  key: string;
  value: string;
}

export interface IdempotencyKeysTable {
  key: string;
  request_hash: string;
  image_id: string;
  created_at: number;
}

export interface JobsTable {
  id: string;
  kind: JobKind;
  /** '' for a job on no image (GC) */
  image_id: string;
  state: JobState;
  /** JSON, the handler's */
  payload: string;
  /** the phase the next run starts in; '' = the handler's first (0006-job-queue; defaults to '') */
  phase: ColumnType<string, string | undefined, string>;
  progress: number | null;
  attempts: number;
  error: string | null;
  /** the worker holding the job and until when (ms since the epoch); null = claimable when running */
  lease_owner: string | null;
  lease_until: number | null;
  created_at: number;
  updated_at: number;
}

export interface ProjectsTable {
  name: string;
  description: string | null;
  created_at: number;
  /** quota limits; null = unlimited */
  max_images: number | null;
  max_stored_bytes: number | null;
  max_staging_bytes: number | null;
  max_imports: number | null;
  /** convert-on-import target for this project's images; null = the server's setting, 'none' = keep */
  convert_to: string | null;
}

export interface UsersTable {
  name: string;
  server_admin: number;
  created_at: number;
}

export interface GroupsTable {
  name: string;
  description: string | null;
  created_at: number;
}

export interface GroupMembersTable {
  group_name: string;
  user_name: string;
}

export interface ProjectRolesTable {
  project: string;
  subject_kind: Grant['subjectKind'];
  subject: string;
  role: Role;
}

export interface TokensTable {
  id: string;
  name: string;
  user_name: string;
  /** null only for server-admin tokens */
  project: string | null;
  role: TokenRecord['role'];
  /** sha256 hex of the secret */
  secret_hash: string;
  created_at: number;
  created_by: string;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

export interface ImageMembersTable {
  image_id: string;
  project: string;
  status: MemberStatus;
  created_at: number;
  updated_at: number;
}

export interface OidcIssuersTable {
  issuer: string;
  audience: string;
  jwks_url: string | null;
  username_claim: string;
  created_at: number;
}

export interface ClaimRulesTable {
  id: string;
  /** null = any configured issuer */
  issuer: string | null;
  claim: string;
  /** exact value, or a pattern with one {project} placeholder */
  value: string;
  /** target project (null when the value has {project}) */
  project: string | null;
  role: Role | null;
  /** or: membership of this group */
  group_name: string | null;
  created_at: number;
}

export interface AuditTable {
  id: string;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  project: string | null;
  remote: string | null;
  result: string;
  detail: string | null;
}

/** A converted form of an image (or its original, after convert-on-import), stored as its own blob. */
export interface ImageVariantsTable {
  image_id: string;
  /** disk format name of the writers (raw, qcow2, vmdk, vhd, vhdx, vdi) */
  format: string;
  /** canonical writer options, "k=v,k=v" sorted by key; '' = the writer's defaults */
  options_key: string;
  digest: Digest;
  size: number;
  created_at: number;
}

/** An OCI repository `<project>/<path>` (0007-oci-registry). */
export interface OciRepositoriesTable {
  name: string;
  project: string;
  created_at: number;
}

/** A blob of the one store linked to a repository (pushed or mounted there). */
export interface OciBlobsTable {
  repository: string;
  digest: Digest;
  size: number;
  created_at: number;
}

/** A manifest (its bytes are a blob of the one store) and the facts listing, referrers and GC need. */
export interface OciManifestsTable {
  repository: string;
  digest: Digest;
  media_type: string;
  artifact_type: string | null;
  subject: Digest | null;
  size: number;
  /** 0 for an image manifest; an index is one more than its deepest child */
  depth: number;
  /** JSON object, or null */
  annotations: string | null;
  created_at: number;
}

/** What a manifest references: its config and layers, or an index's child manifests. */
export interface OciManifestRefsTable {
  repository: string;
  manifest: Digest;
  child: Digest;
}

export interface OciTagsTable {
  repository: string;
  tag: string;
  digest: Digest;
  updated_at: number;
}

export interface OciUploadsTable {
  id: string;
  repository: string;
  /** bytes received so far (the sum of its chunks) */
  size: number;
  started_at: number;
  updated_at: number;
}

/** A received chunk of an upload session: a committed blob of the one store, at its offset. */
export interface OciUploadChunksTable {
  upload_id: string;
  offset: number;
  digest: Digest;
  size: number;
}

export interface ResumableUploadsTable {
  id: string;
  image_id: string;
  size: number;
  metadata: string;
  created_by: string;
  created_at: number;
  expires_at: number;
}

export interface UploadGrantsTable {
  id: string;
  secret_hash: string;
  image_id: string;
  created_by: string;
  created_at: number;
  expires_at: number;
}

/** The digest of a containerDisk layer generated around a stored disk under a file name (derived, cached). */
export interface OciGeneratedLayersTable {
  disk_digest: Digest;
  file_name: string;
  layer_digest: Digest;
  created_at: number;
}

export interface MigrationRow {
  name: string;
  applied_at: ColumnType<number, number, never>;
  seq: Generated<number>;
}

export interface Schema {
  images: ImagesTable;
  image_tags: ImageTagsTable;
  image_properties: ImagePropertiesTable;
  idempotency_keys: IdempotencyKeysTable;
  jobs: JobsTable;
  projects: ProjectsTable;
  users: UsersTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  project_roles: ProjectRolesTable;
  tokens: TokensTable;
  image_members: ImageMembersTable;
  oidc_issuers: OidcIssuersTable;
  claim_rules: ClaimRulesTable;
  audit_log: AuditTable;
  image_variants: ImageVariantsTable;
  oci_repositories: OciRepositoriesTable;
  oci_blobs: OciBlobsTable;
  oci_manifests: OciManifestsTable;
  oci_manifest_refs: OciManifestRefsTable;
  oci_tags: OciTagsTable;
  oci_uploads: OciUploadsTable;
  resumable_uploads: ResumableUploadsTable;
  upload_grants: UploadGrantsTable;
  oci_upload_chunks: OciUploadChunksTable;
  oci_generated_layers: OciGeneratedLayersTable;
}
