/**
 * Glance's interoperable image import under `/image/v2/images/{id}`:
 * - `PUT …/stage`: the body is a new *source* of the one ingest path (`ImageAccess.stage`):
 *   inspected, hashed and judged as it arrives, committed to the store and kept `staged` (Glance's
 *   `uploading`) until imported; a refused stage ends `killed` with nothing stored.
 * - `POST …/import` (202): `glance-direct` imports the staged bytes (an import job), `web-download`
 *   is the URL import job with its URL policy, `copy-image` has nothing to copy to (one store)
 *   and answers as Glance does when the image is already in every store asked for.
 * Checks and their order, statuses and messages follow Glance 25.1's `ImagesController.import_image`.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { Type } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { GlanceError } from './error-table.js';
import { receiveImageBody } from './image-body.js';
import { glanceStatus } from '../../domain/images/lifecycle.js';
import { IMPORT_METHODS, STORE_ID, type ImportMethod } from './import-view.js';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

interface ImportRequest {
  method: ImportMethod;
  uri?: string;
  /** the stores asked for; `all` = every store (all_stores) */
  stores: string[] | 'all';
}

export const glanceImportRoutes: FastifyPluginAsyncTypebox<{ imageAccess: ImageAccess; bodyIdleTimeoutMs: number }> = async (
  app,
  { imageAccess, bodyIdleTimeoutMs },
) => {
  app.put('/v2/images/:id/stage', { schema: { params: IdParams }, config: { rawBody: true } }, async (req, reply) =>
    receiveImageBody(req, reply, bodyIdleTimeoutMs, (body, opts) => imageAccess.stage(ctxOf(req), req.params.id, body, opts)),
  );

  app.post('/v2/images/:id/import', { schema: { params: IdParams } }, async (req, reply) => {
    const request = parseImportRequest(req.body, header(req, 'x-image-meta-store'));
    const ctx = ctxOf(req);
    const img = await imageAccess.getImage(ctx, req.params.id);
    const status: string = glanceStatus(img);
    if (status === 'active' && request.method !== 'copy-image') throw new GlanceError(409, 'Image with status active cannot be target for import');
    if (status !== 'active' && request.method === 'copy-image') throw new GlanceError(409, 'Only images with status active can be targeted for copying');
    // a killed image takes a new import, as Glance's failed import leaves its image queued
    if (request.method === 'web-download' && status !== 'queued' && status !== 'killed')
      throw new GlanceError(409, `Image needs to be in 'queued' state to use 'web-download' method`);
    if (request.method === 'glance-direct' && img.state !== 'staged') {
      throw new GlanceError(
        409,
        img.state === 'importing' && img.ingestKind === 'stage'
          ? 'The image data is still being staged; import it once the stage has finished'
          : "Image needs to be staged before 'glance-direct' method can be used",
      );
    }
    if (!img.containerFormat) throw new GlanceError(409, "'container_format' needs to be set before import");
    if (!img.diskFormat) throw new GlanceError(409, "'disk_format' needs to be set before import");
    if (request.stores !== 'all') for (const s of request.stores) if (s !== STORE_ID) throw new GlanceError(409, `Store for identifier ${s} not found`);

    switch (request.method) {
      case 'copy-image':
        // one store, which holds every active image: all_stores has nothing left to do (Glance: 202);
        // naming the store is copying onto itself (Glance: 400)
        if (request.stores === 'all') return accepted(reply);
        throw new GlanceError(400, `Image is already present at store '${STORE_ID}'`);
      case 'web-download':
        if (request.uri === undefined)
          throw new GlanceError(400, 'web-download needs the URL to import from: send it as method.uri (glance image-import --uri URL)');
        await imageAccess.startImport(ctx, img.id, request.uri);
        return accepted(reply);
      case 'glance-direct':
        await imageAccess.importStaged(ctx, img.id);
        return accepted(reply);
    }
  });
};

function accepted(reply: FastifyReply): FastifyReply {
  return reply.code(202).type('text/html; charset=UTF-8').send('');
}

/** Glance's `_validate_import_body` and `get_stores_from_request`, with its messages. */
function parseImportRequest(body: unknown, storeHeader: string | undefined): ImportRequest {
  const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
  const method = b.method;
  if (typeof method !== 'object' || method === null || Array.isArray(method)) throw new GlanceError(400, "Import request requires a 'method' field.");
  const m = method as Record<string, unknown>;
  if (m.name === undefined) throw new GlanceError(400, "Import request requires a 'name' field.");
  if (typeof m.name !== 'string' || !(IMPORT_METHODS as readonly string[]).includes(m.name))
    throw new GlanceError(400, `Unknown import method name '${String(m.name).slice(0, 100)}'.`);
  if (b.all_stores_must_succeed !== undefined && typeof b.all_stores_must_succeed !== 'boolean')
    throw new GlanceError(400, "'all_stores_must_succeed' must be boolean value only");
  if (b.all_stores !== undefined && typeof b.all_stores !== 'boolean') throw new GlanceError(400, "'all_stores' must be boolean value only");
  if (m.uri !== undefined && m.uri !== null && typeof m.uri !== 'string') throw new GlanceError(400, 'method.uri must be a string: the URL to import from');
  let stores: string[] | 'all';
  if (b.all_stores === true) {
    if (b.stores !== undefined || storeHeader !== undefined)
      throw new GlanceError(400, "All_stores parameter can't be used with x-image-meta-store header or stores parameter");
    stores = 'all';
  } else if (b.stores !== undefined) {
    if (storeHeader !== undefined) throw new GlanceError(400, "Stores parameter and x-image-meta-store header can't be both specified");
    if (!Array.isArray(b.stores) || !b.stores.every((s) => typeof s === 'string'))
      throw new GlanceError(400, `stores must be a list of store ids (this server has one: ${STORE_ID})`);
    stores = b.stores as string[];
  } else stores = [storeHeader ?? STORE_ID];
  const request: ImportRequest = { method: m.name as ImportMethod, stores };
  if (typeof m.uri === 'string') request.uri = m.uri;
  return request;
}
