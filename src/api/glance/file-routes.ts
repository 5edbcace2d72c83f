/**
 * `/image/v2/images/{id}/file`: the image bytes. Upload is Glance's `PUT` (chunked, no length
 * needed) through the one ingest path (`ImageAccess.upload`); download is `sendStoredBytes` with
 * Range and Content-MD5 (glanceclient checks it when present, and the sha512 `os_hash_value`).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import { sendfileEngine } from '../../io/sendfile.js';
import { etagOf, sendStoredBytes, type SendOptions } from '../http/blob-reply.js';
import { parseRange } from '../http/byte-range.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { GlanceError } from './error-table.js';
import { receiveImageBody } from './image-body.js';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export const glanceFileRoutes: FastifyPluginAsyncTypebox<{ imageAccess: ImageAccess; bodyIdleTimeoutMs: number }> = async (
  app,
  { imageAccess, bodyIdleTimeoutMs },
) => {
  const sendOptions: SendOptions = { idleTimeoutMs: bodyIdleTimeoutMs, engine: sendfileEngine() };

  app.put('/v2/images/:id/file', { schema: { params: IdParams }, config: { rawBody: true } }, async (req, reply) =>
    receiveImageBody(req, reply, bodyIdleTimeoutMs, (body, opts) => imageAccess.upload(ctxOf(req), req.params.id, body, opts)),
  );

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
