/**
 * `/api/v1/images/{id}/file`: the image bytes. Upload (streamed, never buffered) and download
 * (Range, ETag, Repr-Digest), optionally in another format through a stored or live variant.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import { DomainError } from '../../domain/errors.js';
import { parseConvertTarget } from '../../domain/images/variants.js';
import { sendfileEngine } from '../../io/sendfile.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { etagOf, isNotModified, sendStoredBytes, type SendOptions } from '../http/blob-reply.js';
import { parseRange } from '../http/byte-range.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { imageJson, imageSchema } from './image-json.js';
import { IdParams } from './request-schemas.js';

export interface FileRoutesOptions {
  imageAccess: ImageAccess;
  /** an upload body that stops arriving, or a download the client stops taking, this long is cut off */
  bodyIdleTimeoutMs: number;
}

const FileQuery = Type.Object({
  format: Type.Optional(Type.String({ maxLength: 16, description: "raw, qcow2, vmdk, vhd, vhdx or vdi; the image's own format is the original" })),
  subformat: Type.Optional(Type.String({ maxLength: 64, description: 'e.g. fixed (vhd), streamOptimized (vmdk)' })),
  options: Type.Optional(Type.String({ maxLength: 600, description: 'writer options as qemu-img -o spells them: k=v,k=v (compress=on for -c)' })),
});

interface FileRequest {
  Params: Static<typeof IdParams>;
  Querystring: Static<typeof FileQuery>;
}

export const fileRoutes: FastifyPluginAsyncTypebox<FileRoutesOptions> = async (app, { imageAccess, bodyIdleTimeoutMs }) => {
  const sendOptions: SendOptions = { idleTimeoutMs: bodyIdleTimeoutMs, engine: sendfileEngine() };
  app.put(
    '/images/:id/file',
    {
      schema: {
        summary: 'Upload the image bytes (streamed; gz/xz/zstd/bz2 are unwrapped; works with curl -T)',
        tags: ['images'],
        params: IdParams,
        headers: Type.Object({ 'x-image-size': Type.Optional(Type.String({ description: 'bytes the upload will send, when Content-Length is absent' })) }),
        consumes: ['application/octet-stream'],
        response: { 200: imageSchema('the image') },
      },
      config: { rawBody: true },
      // refused before any byte is read: a JSON, text or form body is not an image (no parser runs)
      preParsing: async (req) => {
        const type = header(req, 'content-type');
        if (type !== undefined && NOT_IMAGE_BYTES.test(type)) {
          throw new DomainError(
            'UNSUPPORTED_MEDIA_TYPE',
            `the image bytes were sent as ${type.slice(0, 100)}; send them as Content-Type: application/octet-stream (curl -T sets none, which is fine too)`,
            { accepted: ['application/octet-stream'] },
          );
        }
      },
    },
    async (req, reply) => {
      const announced = announcedSize(req);
      const ac = new AbortController();
      const onClose = () => {
        if (!req.raw.complete) ac.abort(new Error(`the client disconnected after sending part of the body`));
      };
      req.raw.on('close', onClose);
      try {
        const body = withBodyIdleTimeout(req.raw, bodyIdleTimeoutMs);
        const image = await imageAccess.upload(ctxOf(req), req.params.id, body, { announcedSize: announced, signal: ac.signal });
        return imageJson(image);
      } catch (e) {
        // a stalled client may never read the answer: close the socket once the 408 is written
        if (e instanceof DomainError && e.code === 'REQUEST_TIMEOUT') reply.raw.once('finish', () => req.raw.socket.destroy());
        throw e;
      } finally {
        req.raw.off('close', onClose);
      }
    },
  );

  /**
   * `?format=FMT[&subformat=S][&options=k=v,...]`: the bytes in another format. A stored variant
   * (or the original, for the image's own format) is served like the plain download: Range, ETag
   * (its own digest), Repr-Digest. A conversion made now is sent as it is produced (chunked: no
   * length, no Range, no ETag) and stored meanwhile, so the next download is a plain read.
   */
  const variantRoute = async (req: FastifyRequest<FileRequest>, reply: FastifyReply, head: boolean, format: string) => {
    const { subformat, options } = req.query;
    const target = parseConvertTarget(format, { subformat, options });
    const r = await imageAccess.openVariant(ctxOf(req), req.params.id, target, {
      head,
      rangeFor: (size, digest) => parseRange(header(req, 'range'), size, header(req, 'if-range'), etagOf(digest)),
    });
    void reply.header('content-type', 'application/octet-stream').header('x-image-format', r.format);
    if (r.kind === 'converting') {
      void reply.header('x-image-variant', 'converting').header('cache-control', 'no-store');
      return head ? reply.send() : reply.send(r.stream);
    }
    const etag = etagOf(r.digest);
    void reply.header('x-image-variant', r.source);
    if (isNotModified(req, etag)) {
      return reply.code(304).header('accept-ranges', 'bytes').header('etag', etag).send();
    }
    return sendStoredBytes(reply, { digest: r.digest, sha512: r.sha512, md5: r.md5, sizeBytes: r.sizeBytes, range: r.range }, r.body, sendOptions);
  };

  const fileRoute = async (req: FastifyRequest<FileRequest>, reply: FastifyReply, head: boolean) => {
    if (typeof req.query.format === 'string') return variantRoute(req, reply, head, req.query.format);
    const id = req.params.id;
    const ctx = ctxOf(req);
    const img = await imageAccess.getImage(ctx, id);
    const etag = img.digest ? etagOf(img.digest) : undefined;
    const range = parseRange(header(req, 'range'), img.storedSize ?? 0, header(req, 'if-range'), etag);
    if (isNotModified(req, etag)) return reply.code(304).header('etag', etag).send();
    const { image, body } = head ? { image: img, body: undefined } : await imageAccess.openFile(ctx, id, range ?? undefined);
    // HEAD answers like GET: an image without readable bytes is refused the same way
    if (head && (!image.digest || image.state !== 'ready')) await imageAccess.openFile(ctx, id);
    const { digest, checksums } = image;
    return sendStoredBytes(reply, { digest, sha512: checksums.sha512, md5: checksums.md5, sizeBytes: image.storedSize ?? 0, range }, body, sendOptions);
  };

  app.get(
    '/images/:id/file',
    {
      schema: {
        summary: 'Download the image bytes (Range, ETag, Repr-Digest), optionally converted to another format',
        tags: ['images'],
        params: IdParams,
        querystring: FileQuery,
        produces: ['application/octet-stream'],
      },
    },
    (req, reply) => fileRoute(req, reply, false),
  );
  app.head('/images/:id/file', { schema: { params: IdParams, querystring: FileQuery } }, (req, reply) => fileRoute(req, reply, true));
};

/** Content-Types that cannot be image bytes (a client that sent JSON, text or a form by mistake). */
const NOT_IMAGE_BYTES = /^\s*(?:application\/(?:json|[\w.+-]*\+json|x-www-form-urlencoded)|text\/|multipart\/)/i;

function announcedSize(req: FastifyRequest): number | undefined {
  for (const h of ['content-length', 'x-image-size']) {
    const v = header(req, h);
    if (v === undefined) continue;
    if (!/^\d{1,16}$/.test(v)) throw new DomainError('INVALID_REQUEST', `header ${h} must be a byte count, got "${v.slice(0, 40)}"`);
    return Number(v);
  }
  return undefined;
}
