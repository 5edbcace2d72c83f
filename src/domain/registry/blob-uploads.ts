/**
 * Blob pushes (distribution spec v1.1 "Pushing blobs"): monolithic (one request), chunked
 * (sessions that receive PATCHes in order), and cross-repository mounts. Every byte goes through
 * the one data path — `stageBlob` into the BlobStore's content-addressed store — so an OCI blob
 * and a REST upload with the same bytes are one stored blob.
 *
 * A session is a database row; each chunk it receives is staged and committed as a blob of its
 * own (its address is its sha256) and recorded at its offset. So a session survives a restart
 * (its chunks are committed blobs, GC keeps them while the session lives), a chunk cut off by a
 * crash or a dropped client is simply not there (the session resumes at the last whole chunk), and
 * nothing half-written is ever in the content-addressed store. Closing a session of one chunk (what
 * skopeo, oras and docker send) links that chunk's blob as is; several chunks are read back once,
 * in order, through `stageBlob` to make the final blob. A session that receives nothing for the
 * configured lifetime expires: its row goes, and its chunk blobs are garbage for GC.
 *
 * A blob staged from its first byte is also tapped for EarlyLayerIngests (early-layer-ingests.ts):
 * when it may be a containerDisk layer, its disk is ingested beside it as the chunks pass, so the
 * manifest PUT finds that work done.
 */
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { RequestContext } from '../access/authorizer.js';
import { DomainError } from '../errors.js';
import { stageBlob } from '../images/stage-blob.js';
import type { BlobStore, Digest } from '../../store/blob-store.js';
import type { EarlyLayerIngests } from './early-layer-ingests.js';
import type { RegistryAccess } from './registry-access.js';
import { exceeded, type RegistryQuota } from './registry-quota.js';
import type { RegistryRepository, UploadRecord } from './registry-repository.js';
import type { RepositoryName } from './repository-name.js';

export interface UploadState {
  id: string;
  repository: string;
  /** bytes received so far */
  sizeBytes: number;
}

export interface BlobUploadsOptions {
  /** largest blob we store */
  maxBlobBytes: number;
  /** a session that receives nothing for this long expires */
  uploadTtlMs: number;
  now?: () => number;
}

export type MountResult = { mounted: true; digest: Digest } | { mounted: false; upload: UploadState };

export class BlobUploads {
  constructor(
    private readonly repo: RegistryRepository,
    private readonly store: BlobStore,
    private readonly access: RegistryAccess,
    private readonly quota: RegistryQuota,
    private readonly opts: BlobUploadsOptions,
    /** containerDisk layers ingested while they arrive (a blob staged from its first byte is tapped) */
    private readonly early?: EarlyLayerIngests,
  ) {}

  private now(): Date {
    return new Date(this.opts.now?.() ?? Date.now());
  }

  /** POST /blobs/uploads/: a new session. */
  async start(ctx: RequestContext, name: string): Promise<UploadState> {
    const repo = await this.access.push(ctx, name);
    return this.open(repo);
  }

  private async open(repo: RepositoryName): Promise<UploadState> {
    await this.repo.ensureRepository(repo.name, repo.project);
    const now = this.now();
    const u: UploadRecord = { id: randomUUID(), repository: repo.name, sizeBytes: 0, startedAt: now, updatedAt: now };
    await this.repo.createUpload(u);
    return { id: u.id, repository: u.repository, sizeBytes: 0 };
  }

  /**
   * POST ?mount=<digest>&from=<repo>: links the blob from a repository the caller may read; when
   * it may not (or the blob is not there), a new session instead — the spec's fallback, which also
   * keeps a private repository's content from being probed.
   */
  async mount(ctx: RequestContext, name: string, digest: Digest, from: string | undefined): Promise<MountResult> {
    const repo = await this.access.push(ctx, name);
    if (from !== undefined && (await this.access.canPull(ctx.principal, from))) {
      const size = await this.repo.linkedBlob(from, digest);
      if (size !== undefined && (await this.store.stat(digest))) {
        await this.repo.underQuota(
          repo.project,
          async (w) => {
            await w.ensureRepository(repo.name, repo.project);
            await w.linkBlob(repo.name, digest, size);
          },
          this.quota.check(repo.project),
        );
        return { mounted: true, digest };
      }
    }
    return { mounted: false, upload: await this.open(repo) };
  }

  /** POST ?digest=<digest> with the bytes: the whole blob in one request. */
  async pushMonolithic(ctx: RequestContext, name: string, digest: Digest, body: AsyncIterable<Uint8Array>, announcedSize?: number): Promise<Digest> {
    const repo = await this.access.push(ctx, name);
    const size = await this.stage(repo, body, announcedSize, digest);
    await this.repo.underQuota(
      repo.project,
      async (w) => {
        await w.ensureRepository(repo.name, repo.project);
        await w.linkBlob(repo.name, digest, size.sizeBytes);
      },
      this.quota.check(repo.project),
    );
    return digest;
  }

  /** GET on the session: how many bytes it holds. */
  async status(ctx: RequestContext, name: string, id: string): Promise<UploadState> {
    const repo = await this.access.push(ctx, name);
    const u = await this.session(repo, id);
    return { id, repository: repo.name, sizeBytes: u.sizeBytes };
  }

  /**
   * PATCH: appends the body. `range` (Content-Range) must start where the session ends; a chunk
   * for another offset is RANGE_NOT_SATISFIABLE (416) and is not read.
   */
  async append(
    ctx: RequestContext,
    name: string,
    id: string,
    body: AsyncIterable<Uint8Array>,
    opts: { range?: { start: number; end: number }; announcedSize?: number },
  ): Promise<UploadState> {
    const repo = await this.access.push(ctx, name);
    const u = await this.session(repo, id);
    if (opts.range && opts.range.start !== u.sizeBytes) throw outOfOrder(u, opts.range.start);
    const expected = opts.range ? opts.range.end - opts.range.start + 1 : undefined;
    if (expected !== undefined && opts.announcedSize !== undefined && expected !== opts.announcedSize) {
      throw new DomainError(
        'INVALID_REQUEST',
        `Content-Range announces ${expected} bytes but Content-Length ${opts.announcedSize}; send the chunk again with matching headers`,
        {
          upload: id,
        },
      );
    }
    const staged = await this.stage(repo, body, opts.announcedSize ?? expected, undefined, u.sizeBytes);
    if (expected !== undefined && staged.sizeBytes !== expected) {
      throw new DomainError('INVALID_REQUEST', `the chunk has ${staged.sizeBytes} bytes, not the ${expected} its Content-Range announced; send it again`, {
        upload: id,
      });
    }
    if (staged.sizeBytes === 0) return { id, repository: repo.name, sizeBytes: u.sizeBytes };
    const chunk = { offset: u.sizeBytes, digest: staged.digest, sizeBytes: staged.sizeBytes };
    const appended = await this.repo.underQuota(repo.project, (w) => w.appendChunk(id, chunk, this.now()), this.quota.check(repo.project));
    if (!appended) {
      const now = await this.repo.upload(id);
      if (!now) throw uploadNotFound(id);
      throw outOfOrder(now, u.sizeBytes);
    }
    return { id, repository: repo.name, sizeBytes: u.sizeBytes + staged.sizeBytes };
  }

  /** PUT ?digest=: closes the session (with an optional last chunk) into the blob `digest`. */
  async finish(
    ctx: RequestContext,
    name: string,
    id: string,
    digest: Digest,
    body: AsyncIterable<Uint8Array> | undefined,
    announcedSize?: number,
  ): Promise<Digest> {
    const repo = await this.access.push(ctx, name);
    const u = await this.session(repo, id);
    const chunks = await this.repo.uploadChunks(id);
    const hasBody = body !== undefined && announcedSize !== 0;
    let sizeBytes: number;
    if (chunks.length === 1 && !hasBody) {
      // the common case (one PATCH with the whole blob): the chunk is the blob, nothing is copied
      const only = chunks[0]!;
      if (only.digest !== digest) {
        throw new DomainError(
          'DIGEST_MISMATCH',
          `the uploaded bytes hash to ${only.digest}, not ${digest}; the session is kept — finish it with the right digest or cancel it`,
          {
            expected: digest,
            actual: only.digest,
          },
        );
      }
      sizeBytes = only.sizeBytes;
    } else {
      const store = this.store;
      const parts = async function* (): AsyncGenerator<Uint8Array> {
        for (const c of chunks) {
          const stream: Readable = await store.read(c.digest);
          for await (const b of stream) yield b as Uint8Array;
        }
        if (body) yield* body;
      };
      sizeBytes = (await this.stage(repo, parts(), undefined, digest, 0, u.sizeBytes)).sizeBytes;
    }
    await this.repo.underQuota(
      repo.project,
      async (w) => {
        await w.linkBlob(repo.name, digest, sizeBytes);
        await w.deleteUpload(id);
      },
      this.quota.check(repo.project),
    );
    return digest;
  }

  /** DELETE on the session. */
  async cancel(ctx: RequestContext, name: string, id: string): Promise<void> {
    const repo = await this.access.push(ctx, name);
    await this.session(repo, id);
    await this.repo.deleteUpload(id);
  }

  /** Ends the sessions idle past their lifetime (at start-up and on a schedule); returns how many. */
  expire(): Promise<number> {
    return this.repo.expireUploads(new Date(this.now().getTime() - this.opts.uploadTtlMs));
  }

  /** Every digest the registry references (GC keeps them): the chunks of live sessions only. */
  referencedDigests(): Promise<Set<Digest>> {
    return this.repo.referencedDigests(new Date(this.now().getTime() - this.opts.uploadTtlMs));
  }

  /** The live session `id` of `repo`; UPLOAD_NOT_FOUND when unknown, another repository's, or expired. */
  private async session(repo: RepositoryName, id: string): Promise<UploadRecord> {
    const u = /^[0-9a-f-]{36}$/.test(id) ? await this.repo.upload(id) : undefined;
    if (!u || u.repository !== repo.name) throw uploadNotFound(id);
    if (u.updatedAt.getTime() < this.now().getTime() - this.opts.uploadTtlMs) {
      await this.repo.deleteUpload(id);
      throw uploadNotFound(id, 'it expired');
    }
    return u;
  }

  /**
   * Stages `body` into the store (verified against `expect` when given), refusing it past the
   * blob size limit or the project's quota room as read before (the early refusal; the write that
   * links what was staged is checked again under the project's lock). `counted` bytes of the project are already in
   * its usage (an open session's chunks, which become this blob).
   */
  private async stage(
    repo: RepositoryName,
    body: AsyncIterable<Uint8Array>,
    announcedSize: number | undefined,
    expect: Digest | undefined,
    offset = 0,
    counted = 0,
  ): Promise<{ digest: Digest; sizeBytes: number }> {
    const q = await this.quota.room(repo.project);
    const room = q === undefined ? Infinity : q.room + counted;
    const tooLarge = (n: number) =>
      new DomainError(
        'SIZE_LIMIT',
        `the blob (${n} bytes) is over the ${this.opts.maxBlobBytes}-byte limit for one blob; ask an administrator to raise IMAGO_MAX_IMAGE_SIZE`,
        {
          size: n,
          limit: this.opts.maxBlobBytes,
        },
      );
    if (announcedSize !== undefined) {
      if (offset + announcedSize > this.opts.maxBlobBytes) throw tooLarge(offset + announcedSize);
      if (announcedSize > room) throw exceeded(repo.project, q!, announcedSize);
    }
    let n = 0;
    // a blob from its first byte may be a containerDisk layer: its disk is ingested beside it
    const tap = offset === 0 ? this.early?.tap(room) : undefined;
    let staged;
    try {
      staged = await stageBlob(this.store, body, {
        md5: false,
        // an OCI blob is addressed by its sha256 alone; the image a pushed disk becomes is hashed by its own ingest
        sha512: false,
        expect,
        onChunk: (chunk) => {
          n += chunk.length;
          if (offset + n > this.opts.maxBlobBytes) throw tooLarge(offset + n);
          if (n > room) throw exceeded(repo.project, q!, undefined);
          return tap?.write(chunk);
        },
      });
    } catch (e) {
      tap?.failed(e);
      throw e;
    }
    tap?.committed(staged.blob.digest);
    return { digest: staged.blob.digest, sizeBytes: staged.blob.sizeBytes };
  }
}

export function uploadNotFound(id: string, why?: string): DomainError {
  return new DomainError(
    'UPLOAD_NOT_FOUND',
    `upload ${id.slice(0, 64)} is not open${why ? ` (${why})` : ''}: it never existed, was finished or cancelled, or expired; start a new upload with POST /v2/<name>/blobs/uploads/`,
    { upload: id.slice(0, 64) },
  );
}

function outOfOrder(u: UploadRecord, start: number): DomainError {
  return new DomainError(
    'RANGE_NOT_SATISFIABLE',
    `the chunk starts at byte ${start}, but upload ${u.id} holds ${u.sizeBytes} bytes; send the chunk that starts at ${u.sizeBytes}`,
    {
      upload: u.id,
      uploaded: u.sizeBytes,
    },
  );
}
