/**
 * `/image/v2/images/{id}/file`: the image bytes. Upload is Glance's `PUT` (chunked, no length
 * needed) through the one ingest path (`ImageAccess.upload`); download is `sendStoredBytes` with
 * Range and Content-MD5 (glanceclient checks it when present, and the sha512 `os_hash_value`).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import { DomainError } from '../../domain/errors.js';
import { sendfileEngine } from '../../io/sendfile.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { etagOf, sendStoredBytes, type SendOptions } from '../http/blob-reply.js';
import { parseRange } from '../http/byte-range.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { GlanceError } from './error-table.js';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export const glanceFileRoutes: FastifyPluginAsyncTypebox<{ imageAccess: ImageAccess; bodyIdleTimeoutMs: number }> = async (
  app,
  { imageAccess, bodyIdleTimeoutMs },
) => {
  const sendOptions: SendOptions = { idleTimeoutMs: bodyIdleTimeoutMs, engine: sendfileEngine() };

  app.put('/v2/images/:id/file', { schema: { params: IdParams }, config: { rawBody: true } }, async (req, reply) => {
    const type = header(req, 'content-type');
    if (type !== undefined && !/^\s*application\/octet-stream\s*(;|$)/i.test(type)) {
      throw new GlanceError(
        415,
        `The request media type ${type.slice(0, 100)} is not supported by this server; send the image data as application/octet-stream.`,
      );
    }
    const length = header(req, 'content-length');
    if (length !== undefined && !/^\d{1,16}$/.test(length)) throw new GlanceError(400, 'Content-Length must be a byte count.');
    const ac = new AbortController();
    const onClose = () => {
      if (!req.raw.complete) ac.abort(new Error('the client disconnected after sending part of the body'));
    };
    req.raw.on('close', onClose);
    try {
      const body = withBodyIdleTimeout(req.raw, bodyIdleTimeoutMs);
      await imageAccess.upload(ctxOf(req), req.params.id, body, { announcedSize: length === undefined ? undefined : Number(length), signal: ac.signal });
      return reply.code(204).send();
    } catch (e) {
      if (e instanceof DomainError && e.code === 'REQUEST_TIMEOUT') reply.raw.once('finish', () => req.raw.socket.destroy());
      throw e;
    } finally {
      req.raw.off('close', onClose);
    }
  });

  app.get('/v2/images/:id/file', { schema: { params: IdParams } }, async (req, reply) => {
    const ctx = ctxOf(req);
    const img = await imageAccess.getImage(ctx, req.params.id);
    if (img.state === 'disabled') throw new GlanceError(403, 'The requested image has been deactivated. Image data download is forbidden.');
    // Glance: an image without data answers 204
    if (!img.digest || (img.state !== 'ready' && img.state !== 'locked')) return reply.code(204).send();
    const range = parseRange(header(req, 'range'), img.storedSize ?? 0, header(req, 'if-range'), etagOf(img.digest));
    const { image, body } = await imageAccess.openFile(ctx, img.id, range ?? undefined);
    const { digest, checksums } = image;
    return sendStoredBytes(reply, { digest, sha512: checksums.sha512, md5: checksums.md5, sizeBytes: image.storedSize ?? 0, range }, body, sendOptions);
  });
};
