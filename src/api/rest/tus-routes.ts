/**
 * Resumable uploads: the tus 1.0.0 protocol at `/api/v1/uploads` (creation, creation-with-upload,
 * termination, expiration), spoken by `@tus/server` over a datastore of ours (`ImagoTusStore`)
 * whose bytes go to the domain's `ResumableUploads` — the one ingest path, fed part by part. And
 * upload URLs: `PUT /api/v1/upload/<token>` (`curl -T`), the token scoped to one image.
 *
 * Credentials: `Authorization: Bearer <imago token | OIDC JWT>`, or `Bearer <upload token>` (an
 * upload URL's, for its image only). They are read here (the door's hook leaves these paths to
 * us), checked through `ImageAccess` on every request, and handed to the tus hooks by request.
 * A domain error a tus hook throws is answered as the door's problem+json, with the tus headers.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DataStore, Upload } from '@tus/utils';
import { Server as TusServer } from '@tus/server';
import { NodeRequest } from 'srvx/node';
import { Type } from 'typebox';
import type { Authenticator } from '../../domain/access/authenticator.js';
import type { RequestContext } from '../../domain/access/authorizer.js';
import type { ImageAccess } from '../../domain/access/image-access.js';
import { grantPrincipal, isUploadToken, type UploadGrant } from '../../domain/access/upload-grants.js';
import { DomainError } from '../../domain/errors.js';
import type { ResumableUploads } from '../../domain/images/resumable-uploads.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { header } from '../http/request-header.js';
import { sendProblem } from './error-table.js';
import { imageJson, imageSchema, UPLOAD_URL_SCHEMA, type UploadUrlJson } from './image-json.js';
import { IdParams } from './request-schemas.js';

export const TUS_PATH = '/api/v1/uploads';
export const UPLOAD_URL_PATH = '/api/v1/upload';

export interface TusRoutesOptions {
  imageAccess: ImageAccess;
  authenticator: Authenticator;
  resumable: ResumableUploads;
  maxImageBytes: number;
  bodyIdleTimeoutMs: number;
  /** an upload URL's default lifetime */
  uploadUrlTtlMs: number;
}

/** Paths whose routes read their credentials here (see principal.ts `selfAuthenticated`). */
export function tusSelfAuthenticated(path: string): boolean {
  return path === TUS_PATH || path.startsWith(`${TUS_PATH}/`) || path.startsWith(`${UPLOAD_URL_PATH}/`);
}

/** An upload grant as the API answers it: absolute URLs on the address the request came to. */
export function uploadUrlJson(req: FastifyRequest, made: { grant: UploadGrant; token: string }): UploadUrlJson {
  const base = `${req.protocol}://${req.host}`;
  return {
    url: `${base}${UPLOAD_URL_PATH}/${made.token}`,
    tusEndpoint: `${base}${TUS_PATH}`,
    token: made.token,
    expiresAt: made.grant.expiresAt.toISOString(),
  };
}

interface Caller {
  ctx: RequestContext;
  grant?: UploadGrant;
}

/** srvx's request (what @tus/server hands its hooks) → node's, where the caller is kept. */
function nodeRequest(r: unknown): IncomingMessage {
  return (r as { runtime: { node: { req: IncomingMessage } } }).runtime.node.req;
}

/** The tus datastore: offsets, bytes and expiry are the domain's (ResumableUploads); creation happens in onUploadCreate, with the caller. */
class ImagoTusStore extends DataStore {
  /**
   * Uploads finished by the request being answered: @tus/server reads a creation-with-upload's
   * upload once more after its finish hook (for Upload-Expires), when the domain has removed it.
   */
  private readonly justFinished = new Map<string, Upload>();

  constructor(
    private readonly resumable: ResumableUploads,
    private readonly idleMs: number,
  ) {
    super();
    this.extensions = ['creation', 'creation-with-upload', 'termination', 'expiration'];
  }

  override async create(upload: Upload): Promise<Upload> {
    const { upload: u } = await this.resumable.status(upload.id);
    upload.creation_date = u.createdAt.toISOString();
    return upload;
  }

  finished(upload: Upload): void {
    this.justFinished.set(upload.id, new Upload({ ...upload, offset: upload.size ?? upload.offset }));
    if (this.justFinished.size > 100) this.justFinished.delete(this.justFinished.keys().next().value!);
  }

  override async getUpload(id: string): Promise<Upload> {
    const done = this.justFinished.get(id);
    if (done) {
      this.justFinished.delete(id);
      return done;
    }
    const { upload, offset } = await this.resumable.status(id);
    return new Upload({ id, size: upload.sizeBytes, offset, metadata: upload.metadata, creation_date: upload.createdAt.toISOString() });
  }

  override async write(stream: Readable, id: string, offset: number): Promise<number> {
    // a PATCH whose bytes stop arriving is cut off (what arrived is kept): the upload's lock is freed
    return this.resumable.append(id, offset, withBodyIdleTimeout(stream, this.idleMs));
  }

  override async remove(): Promise<void> {
    // termination is answered by our own DELETE route (it is audited with the caller)
    throw new DomainError('INVALID_REQUEST', 'terminate an upload with DELETE /api/v1/uploads/{id}');
  }

  override deleteExpired(): Promise<number> {
    return this.resumable.expire();
  }

  override getExpiration(): number {
    return this.resumable.ttlMs;
  }
}

export const tusRoutes: FastifyPluginAsyncTypebox<TusRoutesOptions> = async (app, opts) => {
  const { imageAccess, resumable } = opts;
  const callers = new WeakMap<IncomingMessage, Caller>();
  const errors = new WeakMap<IncomingMessage, unknown>();
  const callerOf = (r: unknown): Caller => {
    const c = callers.get(nodeRequest(r));
    if (!c) throw new DomainError('UNAUTHENTICATED', 'no credentials');
    return c;
  };

  const store = new ImagoTusStore(resumable, opts.bodyIdleTimeoutMs);
  const tus = new TusServer({
    path: TUS_PATH,
    datastore: store,
    relativeLocation: true,
    maxSize: opts.maxImageBytes,
    // same origin only (the console is served by this server): no CORS headers
    allowedOrigins: [],
    namingFunction: () => randomUUID(),
    onIncomingRequest: async (req, id) => {
      if (req.method === 'POST') return;
      const c = callerOf(req);
      await imageAccess.resumableUpload(c.ctx, id, c.grant);
    },
    onUploadCreate: async (req, upload) => {
      const c = callerOf(req);
      const imageId = upload.metadata?.image_id;
      if (!imageId) {
        throw new DomainError(
          'INVALID_REQUEST',
          'Upload-Metadata must name the image: image_id <base64 of the id> (create the image first with POST /api/v1/images)',
        );
      }
      if (upload.size === undefined) throw new DomainError('INVALID_REQUEST', 'Upload-Length is required (deferred lengths are not supported)');
      await imageAccess.startResumableUpload(c.ctx, imageId, { id: upload.id, sizeBytes: upload.size, metadata: upload.metadata ?? {} }, c.grant);
      return {};
    },
    onUploadFinish: async (_req, upload) => {
      // the last byte is in: answer with the ingest's verdict (a refusal is the image's error)
      const image = await resumable.finished(upload.id);
      store.finished(upload);
      return { headers: { 'Imago-Image-Id': image.id, 'Imago-Image-State': image.state } };
    },
    onResponseError: (req, err) => {
      errors.set(nodeRequest(req), err);
      return undefined;
    },
  });

  /** Hands the request to @tus/server and writes its answer through Fastify (so the door's onSend hooks run). */
  const viaTus = async (req: FastifyRequest, reply: FastifyReply) => {
    const request = new NodeRequest({ req: req.raw, res: reply.raw });
    const res = await tus.handleWeb(request as unknown as Request);
    for (const [k, v] of res.headers) {
      if (k !== 'content-length') void reply.header(k, v);
    }
    const err = errors.get(req.raw);
    // a stalled client may never read the answer: close the socket once the 408 is written
    if (err instanceof DomainError && err.code === 'REQUEST_TIMEOUT') reply.raw.once('finish', () => req.raw.socket.destroy());
    if (err instanceof DomainError) return sendProblem(req, reply, err);
    if (err !== undefined && !(typeof err === 'object' && err !== null && 'status_code' in err)) return sendProblem(req, reply, err);
    const body = await res.text();
    return reply.code(res.status).send(body === '' ? undefined : body);
  };

  /** The caller: an upload URL's token (for its image only), or the usual credentials (never anonymous). */
  const authenticate = async (req: FastifyRequest, token?: string) => {
    const ctx = { principal: req.principal, remote: req.ip };
    const auth = token === undefined ? header(req, 'authorization') : undefined;
    const bearer = auth !== undefined ? /^Bearer\s+(\S+)$/i.exec(auth.trim())?.[1] : undefined;
    const upToken = token ?? (bearer !== undefined && isUploadToken(bearer) ? bearer : undefined);
    let caller: Caller;
    if (upToken !== undefined) {
      const grant = await imageAccess.verifyUploadToken(upToken);
      caller = { ctx: { ...ctx, principal: grantPrincipal(grant) }, grant };
    } else {
      const principal = await opts.authenticator.authenticate(auth);
      if (principal.kind === 'anonymous') {
        throw new DomainError(
          'UNAUTHENTICATED',
          'uploads need credentials: Authorization: Bearer <imago token>, or an upload URL (POST /api/v1/images/{id}/upload-url)',
        );
      }
      caller = { ctx: { ...ctx, principal } };
    }
    callers.set(req.raw, caller);
    return caller;
  };

  const tusRoute = {
    schema: { hide: true },
    config: { rawBody: true },
    onRequest: async (req: FastifyRequest) => {
      if (req.method !== 'OPTIONS') await authenticate(req);
    },
  };
  app.route({ method: ['POST', 'OPTIONS'], url: '/uploads', ...tusRoute, handler: viaTus });
  app.route({ method: ['HEAD', 'PATCH', 'OPTIONS'], url: '/uploads/:id', ...tusRoute, handler: viaTus });

  app.delete('/uploads/:id', { schema: { hide: true, params: IdParams }, onRequest: tusRoute.onRequest }, async (req, reply) => {
    const c = callers.get(req.raw)!;
    await imageAccess.terminateResumableUpload(c.ctx, req.params.id, c.grant);
    return reply.code(204).header('tus-resumable', '1.0.0').send();
  });

  app.post(
    '/images/:id/upload-url',
    {
      schema: {
        summary: 'An upload URL for the image: PUT the bytes to it (curl -T file URL) or use it as the tus endpoint token; scoped to this image, expiring',
        tags: ['images'],
        params: IdParams,
        // optional body: { "expiresIn": seconds } (at most the server's IMAGO_UPLOAD_URL_TTL)
        response: { 201: Type.Unsafe<UploadUrlJson>(UPLOAD_URL_SCHEMA) },
      },
    },
    async (req, reply) => {
      const expiresIn = (req.body as { expiresIn?: unknown } | undefined)?.expiresIn;
      if (expiresIn !== undefined && !(Number.isSafeInteger(expiresIn) && (expiresIn as number) > 0)) {
        throw new DomainError('INVALID_REQUEST', 'expiresIn must be a whole number of seconds greater than 0');
      }
      const { grant, token } = await imageAccess.createUploadUrl(
        { principal: req.principal, remote: req.ip },
        req.params.id,
        expiresIn === undefined ? opts.uploadUrlTtlMs : (expiresIn as number) * 1000,
      );
      const base = `${req.protocol}://${req.host}`;
      return reply
        .code(201)
        .send({ url: `${base}${UPLOAD_URL_PATH}/${token}`, tusEndpoint: `${base}${TUS_PATH}`, token, expiresAt: grant.expiresAt.toISOString() });
    },
  );

  app.put(
    '/upload/:token',
    {
      schema: {
        summary: 'Upload the image bytes to an upload URL (curl -T file URL); the same ingest as PUT /images/{id}/file',
        tags: ['images'],
        params: Type.Object({ token: Type.String({ maxLength: 100 }) }),
        response: { 200: imageSchema('the image') },
      },
      config: { rawBody: true },
    },
    async (req, reply) => {
      const c = await authenticate(req, req.params.token);
      const announced = header(req, 'content-length');
      const ac = new AbortController();
      const onClose = () => {
        if (!req.raw.complete) ac.abort(new Error('the client disconnected after sending part of the body'));
      };
      req.raw.on('close', onClose);
      try {
        const image = await imageAccess.upload(c.ctx, c.grant!.imageId, withBodyIdleTimeout(req.raw, opts.bodyIdleTimeoutMs), {
          announcedSize: announced !== undefined && /^\d{1,16}$/.test(announced) ? Number(announced) : undefined,
          signal: ac.signal,
          grant: c.grant,
        });
        return reply.send(imageJson(image));
      } finally {
        req.raw.off('close', onClose);
      }
    },
  );
};
