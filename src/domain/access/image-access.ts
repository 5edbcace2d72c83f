/**
 * Image operations on behalf of a principal: the authorization-enforcing facade over the image
 * catalog. Every door (REST now; Glance, OCI and the console later) calls these methods with the
 * request's principal, never the image services directly. Each one asks the `Authorizer`, then passes
 * the call on to the catalog (or the import runner); every mutating one is audited, allowed or
 * refused. Ownership at creation (project, visibility, permission bits) and the concurrent-imports
 * quota are decided here, where the principal is known.
 */
import type { ByteRange, Digest } from '../../store/blob-store.js';
import type { AccessRepository } from './access-repository.js';
import { DomainError, forbidden, invalid } from '../errors.js';
import type { Image, ImagePage, ImagePatch, ImageQuery, ImageAttributes } from '../images/image.js';
import type { CreateImageInput, OwnershipInput } from '../images/image-input.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import type { IngestCoordinator } from '../images/ingest-coordinator.js';
import type { IngestOutcome } from '../images/ingest.js';
import type { BlobBody, VariantRead, VariantService } from '../images/variant-service.js';
import type { ImportJobs } from '../jobs/import-job.js';
import type { Job, JobListQuery } from '../jobs/job-queue.js';
import type { ConvertTarget } from '../images/variants.js';
import type { ResumableUpload, ResumableUploads } from '../images/resumable-uploads.js';
import type { AuditLog } from './audit-log.js';
import type { UploadGrant, UploadGrants } from './upload-grants.js';
import { needLogin, scopeOf, type Authorizer, type RequestContext } from './authorizer.js';
import {
  CLUSTER_VISIBILITIES,
  clusterMode,
  defaultProject,
  modeForVisibility,
  parseMode,
  roleAtLeast,
  visibilityForMode,
  type Right,
  type Visibility,
} from './policy.js';

export class ImageAccess {
  private uploads: { resumable: ResumableUploads; grants: UploadGrants } | undefined;

  constructor(
    private readonly images: ImageCatalog,
    private readonly ingests: IngestCoordinator,
    private readonly variants: VariantService,
    private readonly access: AccessRepository,
    private readonly authz: Authorizer,
    private readonly audit: AuditLog,
    private readonly imports?: ImportJobs,
  ) {}

  /** Enables resumable uploads and upload URLs (the composition root wires them). */
  withUploads(resumable: ResumableUploads, grants: UploadGrants): void {
    this.uploads = { resumable, grants };
  }

  private get enabledUploads(): { resumable: ResumableUploads; grants: UploadGrants } {
    if (!this.uploads) throw new DomainError('UNAVAILABLE', 'resumable uploads are not enabled on this server');
    return this.uploads;
  }

  listImages(ctx: RequestContext, query: ImageQuery): Promise<ImagePage> {
    const p = ctx.principal;
    if (query.memberStatus && p.kind === 'anonymous') throw needLogin();
    if (p.serverAdmin && !query.memberStatus) return this.images.list(query);
    return this.images.list({ ...query, access: scopeOf(p) });
  }

  getImage(ctx: RequestContext, id: string): Promise<Image> {
    return this.authz.see(ctx, id).then((s) => s.image);
  }

  async createImage(
    ctx: RequestContext,
    input: CreateImageInput,
    ownership: OwnershipInput,
    idempotencyKey?: string,
  ): Promise<{ image: Image; replayed: boolean }> {
    const p = ctx.principal;
    // default: the caller's only project; a server admin without projects creates cluster-scope images
    const project = ownership.project === undefined ? (defaultProject(p) ?? (p.serverAdmin && p.roles.size === 0 ? null : undefined)) : ownership.project;
    return this.audit.record(ctx, 'image.create', { target: input.name, project: project ?? undefined }, async (note) => {
      if (p.kind === 'anonymous') throw needLogin();
      if (project === undefined) {
        throw invalid(`say which project the image belongs to ("project"); you have roles in ${[...p.roles.keys()].join(', ') || 'no project'}`, {
          field: 'project',
        });
      } else if (project === null) {
        if (!p.serverAdmin) throw forbidden('only server administrators create cluster-scope images (project null); name a project instead');
      } else {
        if (!(await this.access.project(project)))
          throw new DomainError('NOT_FOUND', `project "${project}" does not exist; create it with "imago project create ${project}"`, { project });
        if (!p.serverAdmin && !roleAtLeast(p.roles.get(project), 'writer')) {
          throw p.roles.has(project)
            ? forbidden(`you may not create images in project ${project}: your role is ${p.roles.get(project)}; this needs writer`)
            : forbidden(`you may not create images in project ${project}: you are not a member of it`);
        }
      }
      const visibility = ownership.visibility ?? (project === null ? 'private' : 'project');
      if (visibility === 'public' && !p.serverAdmin)
        throw forbidden('only server administrators make images public (as Glance\'s publicize_image); use "project" or "shared"');
      if (project === null) clusterScopeOnly(visibility);
      const perms = project === null ? clusterMode(visibility) : modeForVisibility(0o660, visibility);
      const r = await this.images.create(input, idempotencyKey, { project: project ?? undefined, owner: p.user, visibility, perms });
      note({ id: r.image.id });
      return r;
    });
  }

  async updateImage(ctx: RequestContext, id: string, patch: Partial<ImageAttributes>, ownership: OwnershipInput): Promise<Image> {
    return this.audit.record(ctx, 'image.update', { target: id }, async (note) => {
      if (ownership.project !== undefined)
        throw invalid('an image cannot move to another project; create a new image there (or clone it)', { field: 'project' });
      const wantsVisibility = ownership.visibility !== undefined;
      const needs: Right = wantsVisibility ? 'admin' : 'manage';
      const img = await this.authz.require(ctx, id, needs, wantsVisibility ? 'change the visibility of' : 'update');
      note(img);
      if (wantsVisibility && Object.keys(patch).length > 0) await this.authz.require(ctx, id, 'manage', 'update');
      const full: ImagePatch = { ...patch };
      if (wantsVisibility) {
        const v = ownership.visibility!;
        if (v === 'public' && img.visibility !== 'public' && !ctx.principal.serverAdmin)
          throw forbidden("only server administrators make images public (as Glance's publicize_image)");
        full.visibility = v;
        if (img.project === undefined) clusterScopeOnly(v);
        full.perms = img.project === undefined ? clusterMode(v) : modeForVisibility(img.perms, v);
      }
      return this.images.update(id, full);
    });
  }

  async chmod(ctx: RequestContext, id: string, mode: string): Promise<Image> {
    return this.audit.record(ctx, 'image.chmod', { target: id, detail: { mode } }, async (note) => {
      const img = await this.authz.require(ctx, id, 'admin', 'change the permissions of');
      note(img);
      let bits: number;
      try {
        bits = parseMode(mode);
      } catch (e) {
        throw invalid((e as Error).message, { field: 'mode' });
      }
      const visibility = visibilityForMode(bits, img.visibility);
      if (img.project === undefined && (bits & 0o070) !== 0) {
        throw invalid(
          `mode ${mode} gives the group digit rights, but image ${id} has no project (cluster scope); use 600 (server admins only) or 604 (public)`,
          { field: 'mode' },
        );
      }
      if (visibility === 'public' && img.visibility !== 'public' && !ctx.principal.serverAdmin)
        throw forbidden(`mode ${mode} gives "other" use, which makes the image public; only server administrators do that`);
      return this.images.update(id, { perms: bits, visibility });
    });
  }

  deleteImage(ctx: RequestContext, id: string): Promise<void> {
    return this.audit.record(ctx, 'image.delete', { target: id }, async (note) => {
      const img = await this.authz.require(ctx, id, 'manage', 'delete');
      note(img);
      if (img.protected) throw forbidden(`image ${id} is protected; clear "protected" first, then delete it`);
      await this.images.delete(id);
    });
  }

  setEnabled(ctx: RequestContext, id: string, enabled: boolean): Promise<Image> {
    return this.audit.record(ctx, enabled ? 'image.enable' : 'image.disable', { target: id }, async (note) => {
      note(await this.authz.require(ctx, id, 'manage', enabled ? 'enable' : 'disable'));
      return enabled ? this.images.enable(id) : this.images.disable(id);
    });
  }

  /**
   * Bytes into image `id`. With an upload grant (an upload URL's token) the caller may upload to
   * the grant's image only; without, it needs the `manage` right.
   */
  upload(
    ctx: RequestContext,
    id: string,
    body: AsyncIterable<Uint8Array>,
    opts: { announcedSize?: number; signal?: AbortSignal; grant?: UploadGrant; expectDigest?: Digest },
  ): Promise<Image> {
    return this.audit.record(
      ctx,
      'image.upload',
      { target: id, detail: opts.announcedSize === undefined ? undefined : { announcedSize: opts.announcedSize } },
      async (note) => {
        note(await this.uploadTarget(ctx, id, opts.grant));
        return this.ingests.upload(id, body, { announcedSize: opts.announcedSize, signal: opts.signal, expectDigest: opts.expectDigest });
      },
    );
  }

  /**
   * An ingest that already ran (`IngestCoordinator.adoptIngested`: an OCI layer's disk, ingested
   * while the layer arrived) becomes image `id`'s bytes: the same right and audit record as `upload`.
   */
  adoptIngested(ctx: RequestContext, id: string, outcome: IngestOutcome, opts: { announcedSize?: number }): Promise<Image> {
    return this.audit.record(
      ctx,
      'image.upload',
      { target: id, detail: opts.announcedSize === undefined ? undefined : { announcedSize: opts.announcedSize } },
      async (note) => {
        note(await this.uploadTarget(ctx, id, undefined));
        return this.ingests.adoptIngested(id, outcome, { announcedSize: opts.announcedSize });
      },
    );
  }

  /** An upload URL for image `id`: a token that may only send that image's bytes, until it expires. */
  createUploadUrl(ctx: RequestContext, id: string, ttlMs?: number): Promise<{ grant: UploadGrant; token: string }> {
    return this.audit.record(ctx, 'image.upload-url', { target: id }, async (note) => {
      const img = await this.authz.require(ctx, id, 'manage', 'make an upload URL for');
      note(img);
      if (!canReceiveBytes(img)) {
        throw new DomainError('INVALID_STATE', `image ${id} is ${img.state}: it takes no bytes any more; create a new image to upload other bytes`, {
          id,
          state: img.state,
        });
      }
      const r = await this.enabledUploads.grants.mint(id, ctx.principal.label, ttlMs);
      note({ grant: r.grant.id, expiresAt: r.grant.expiresAt.toISOString() });
      return r;
    });
  }

  /** The grant an upload token stands for (UNAUTHENTICATED when it is not valid). */
  verifyUploadToken(token: string): Promise<UploadGrant> {
    return this.enabledUploads.grants.verify(token);
  }

  /** tus creation: a resumable upload of `sizeBytes` into image `imageId`, which starts its ingest. */
  startResumableUpload(
    ctx: RequestContext,
    imageId: string,
    u: { id: string; sizeBytes: number; metadata: Record<string, string | null> },
    grant?: UploadGrant,
  ): Promise<ResumableUpload> {
    return this.audit.record(ctx, 'image.upload', { target: imageId, detail: { announcedSize: u.sizeBytes, resumable: u.id } }, async (note) => {
      note(await this.uploadTarget(ctx, imageId, grant));
      return this.enabledUploads.resumable.create({ ...u, imageId, createdBy: ctx.principal.label });
    });
  }

  /** A resumable upload the caller may continue, look at or terminate (the same right as starting it), with its offset. */
  async resumableUpload(ctx: RequestContext, uploadId: string, grant?: UploadGrant): Promise<{ upload: ResumableUpload; offset: number }> {
    const s = await this.enabledUploads.resumable.status(uploadId);
    await this.uploadTarget(ctx, s.upload.imageId, grant);
    return s;
  }

  /** tus termination: the upload ends and its image fails (upload again, or delete it). */
  terminateResumableUpload(ctx: RequestContext, uploadId: string, grant?: UploadGrant): Promise<void> {
    return this.audit.record(ctx, 'image.upload.terminate', { target: uploadId }, async (note) => {
      const { upload } = await this.resumableUpload(ctx, uploadId, grant);
      note({ image: upload.imageId });
      await this.enabledUploads.resumable.terminate(
        uploadId,
        `the resumable upload ${uploadId} was terminated by ${ctx.principal.label}; upload the image again`,
      );
    });
  }

  private async uploadTarget(ctx: RequestContext, id: string, grant: UploadGrant | undefined): Promise<Image> {
    if (!grant) return this.authz.require(ctx, id, 'manage', 'upload to');
    if (grant.imageId !== id) {
      throw forbidden(`this upload URL is for image ${grant.imageId} only, not ${id}; ask for an upload URL of image ${id}`, {
        id,
        grantedImage: grant.imageId,
      });
    }
    return this.images.get(id);
  }

  async openFile(ctx: RequestContext, id: string, range?: ByteRange): Promise<{ image: Image; body: BlobBody }> {
    await this.authz.see(ctx, id);
    return this.variants.openFile(id, range);
  }

  /** The image's bytes in another format (a stored variant, or converted now): the same `use` right as openFile. */
  async openVariant(
    ctx: RequestContext,
    id: string,
    target: ConvertTarget,
    opts: { rangeFor?: (sizeBytes: number, digest: Digest) => ByteRange | null; head?: boolean } = {},
  ): Promise<VariantRead> {
    await this.authz.see(ctx, id);
    return this.variants.openVariant(id, target, opts);
  }

  startImport(ctx: RequestContext, id: string, url: string): Promise<Image> {
    return this.audit.record(ctx, 'image.import', { target: id, detail: { url: url.split('?')[0]!.slice(0, 500) } }, async (note) => {
      const img = await this.authz.require(ctx, id, 'manage', 'import into');
      note(img);
      if (!this.imports) throw new DomainError('UNAVAILABLE', 'URL imports are not enabled on this server');
      if (img.project !== undefined) {
        const project = await this.access.project(img.project);
        const limit = project?.quota.imports;
        if (limit !== undefined) {
          const used = await this.images.repo.usage(img.project);
          if (used.imports + 1 > limit) {
            throw new DomainError(
              'QUOTA_EXCEEDED',
              `project ${img.project} is over its concurrent imports quota: ${used.imports} running, limit ${limit}; wait for one to finish, or ask an administrator to raise the limit (see "imago quota show ${img.project}")`,
              { project: img.project, limit: 'imports', max: limit, used: used.imports },
            );
          }
        }
      }
      return this.imports.start(id, url, { user: ctx.principal.user });
    });
  }

  /**
   * Stages bytes for a later import (Glance's `PUT …/stage`): the same ingest path as an upload —
   * inspection, hashes, verdict, commit — after which the image waits `staged` for `importStaged`.
   * A refused stage leaves the image in `error` with nothing stored.
   */
  stage(ctx: RequestContext, id: string, body: AsyncIterable<Uint8Array>, opts: { announcedSize?: number; signal?: AbortSignal }): Promise<Image> {
    return this.audit.record(
      ctx,
      'image.stage',
      { target: id, detail: opts.announcedSize === undefined ? undefined : { announcedSize: opts.announcedSize } },
      async (note) => {
        note(await this.authz.require(ctx, id, 'manage', 'stage data for'));
        return this.ingests.upload(id, body, { ...opts, kind: 'stage' });
      },
    );
  }

  /** Imports the image's staged bytes (Glance's glance-direct): an import job that makes them the image's. */
  importStaged(ctx: RequestContext, id: string): Promise<Image> {
    return this.audit.record(ctx, 'image.import', { target: id, detail: { source: 'stage' } }, async (note) => {
      note(await this.authz.require(ctx, id, 'manage', 'import into'));
      if (!this.imports) throw new DomainError('UNAVAILABLE', 'imports are not enabled on this server');
      return this.imports.startStaged(id, { user: ctx.principal.user });
    });
  }

  /** The import jobs of an image the caller may see (Glance's `GET …/tasks`), newest first. */
  async importJobsOf(ctx: RequestContext, id: string): Promise<Job[]> {
    await this.authz.see(ctx, id);
    return this.imports ? this.imports.ofImage(id) : [];
  }

  /** Every import job, a page at a time (Glance's `/v2/tasks`): server administrators only. */
  listImportJobs(ctx: RequestContext, query: Omit<JobListQuery, 'kind'>): Promise<Job[]> {
    this.authz.serverAdmin(ctx, 'list import tasks');
    return this.imports ? this.imports.list(query) : Promise.resolve([]);
  }

  /** One import job (Glance's `/v2/tasks/{id}`): server administrators only; NOT_FOUND when there is none. */
  async importJob(ctx: RequestContext, jobId: string): Promise<Job> {
    this.authz.serverAdmin(ctx, 'read import tasks');
    const job = await this.imports?.get(jobId);
    if (!job) throw new DomainError('NOT_FOUND', `no import task has the id ${jobId.slice(0, 80)}`, { id: jobId.slice(0, 80) });
    return job;
  }

  cancelImport(ctx: RequestContext, id: string): Promise<Image> {
    return this.audit.record(ctx, 'image.import.cancel', { target: id }, async (note) => {
      note(await this.authz.require(ctx, id, 'manage', 'cancel the import of'));
      if (!this.imports) throw new DomainError('UNAVAILABLE', 'URL imports are not enabled on this server');
      return this.imports.cancel(id);
    });
  }
}

/** pending or error: an image that may still start an ingest */
function canReceiveBytes(img: Image): boolean {
  return img.state === 'pending' || img.state === 'error';
}

function clusterScopeOnly(v: Visibility): void {
  if (!CLUSTER_VISIBILITIES.includes(v)) {
    throw invalid(
      `visibility "${v}" needs a project to be visible to, and this image has none (cluster scope: server admins only); use "private" or "public", or create the image in a project`,
      {
        field: 'visibility',
        allowed: CLUSTER_VISIBILITIES,
      },
    );
  }
}
