/** `/image/v2/images`: create, list, show, update (JSON patch), delete, deactivate/reactivate, tags. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import type { ImageSharing } from '../../domain/access/image-sharing.js';
import { defaultProject } from '../../domain/access/policy.js';
import { DomainError } from '../../domain/errors.js';
import type { ImageAttributes } from '../../domain/images/image.js';
import { parseCreateInput, parseUpdateInput, type OwnershipInput } from '../../domain/images/image-input.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { GlanceError } from './error-table.js';
import { applyImagePatch, attributeOf, PATCH_MEDIA_TYPES, RESERVED_PREFIX, visibilityOf } from './image-patch.js';
import { glanceImage, SHOWN_ONLY, type GlanceView } from './image-view.js';
import { glanceStatus } from '../../domain/images/lifecycle.js';
import { IMPORT_METHODS, STORE_ID } from './import-view.js';
import { pageLinks, parseGlanceListQuery } from './list-query.js';
import { findImage } from './member-routes.js';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
/** glanceclient sends bodiless requests as application/octet-stream: those routes take no body and read none */
const NO_BODY = { rawBody: true } as const;
const TagParams = Type.Object({ id: Type.String({ maxLength: 64 }), tag: Type.String({ maxLength: 255 }) });

const CORE_CREATE: Record<string, string> = {
  name: 'name',
  protected: 'protected',
  os_hidden: 'hidden',
  disk_format: 'diskFormat',
  container_format: 'containerFormat',
  min_disk: 'minDisk',
  min_ram: 'minRam',
  tags: 'tags',
};

export const glanceImageRoutes: FastifyPluginAsyncTypebox<{ imageAccess: ImageAccess; sharing: ImageSharing; view: GlanceView }> = async (
  app,
  { imageAccess, sharing, view },
) => {
  app.post('/v2/images', async (req, reply) => {
    const body = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new GlanceError(400, 'The request body must be a JSON object.');
    const attrs: Record<string, unknown> = {};
    const properties = Object.create(null) as Record<string, unknown>;
    const ownership: OwnershipInput = {};
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      if (k.startsWith(RESERVED_PREFIX)) throw new GlanceError(403, `Attribute '${k}' is reserved.`);
      if (SHOWN_ONLY.has(k)) throw new GlanceError(403, `Attribute '${k}' is read-only.`);
      if (k === 'id') throw new GlanceError(400, 'This server chooses image ids; create the image without "id".');
      if (k === 'owner') {
        if (v !== null && typeof v !== 'string') throw new GlanceError(400, 'Invalid owner: it must be a project name.');
        if (v !== null) ownership.project = v;
      } else if (k === 'visibility') {
        const hasProject = ownership.project !== undefined || defaultProject(req.principal) !== undefined;
        ownership.visibility = visibilityOf(v, hasProject);
      } else if (Object.hasOwn(CORE_CREATE, k)) {
        if (v !== null) attrs[CORE_CREATE[k]!] = v;
      } else if (attributeOf(k)) attrs[attributeOf(k)!] = v;
      else properties[k] = v;
    }
    if (Object.keys(properties).length > 0) attrs.properties = properties;
    // Glance's default is `shared` (members may be added later); without a project only private exists
    if (ownership.visibility === undefined && (ownership.project ?? defaultProject(req.principal)) !== undefined) ownership.visibility = 'shared';
    const { image } = await imageAccess.createImage(ctxOf(req), parseCreateInput(attrs, { nameless: true }), ownership);
    // as Glance with import and stores configured: the methods `POST …/import` takes, the stores it may name
    void reply
      .code(201)
      .header('location', `/v2/images/${image.id}`)
      .header('openstack-image-import-methods', IMPORT_METHODS.join(','))
      .header('openstack-image-store-ids', STORE_ID);
    return glanceImage(image, view);
  });

  app.get('/v2/images', async (req) => {
    const parsed = parseGlanceListQuery(req.query as Record<string, unknown>);
    const ctx = ctxOf(req);
    if (parsed.marker !== undefined) {
      // a marker the caller may not see is as unknown as one that never existed (Glance: 400)
      try {
        await imageAccess.getImage(ctx, parsed.marker);
      } catch (e) {
        if (e instanceof DomainError && e.code === 'IMAGE_NOT_FOUND') throw new GlanceError(400, `No image found with ID ${parsed.marker}`);
        throw e;
      }
      parsed.query.marker = parsed.marker;
    }
    const page = await imageAccess.listImages(ctx, parsed.query);
    const items = parsed.ids ? page.items.filter((i) => parsed.ids!.includes(i.id)) : page.items;
    const rawQuery = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    const last = page.items[page.items.length - 1];
    const links = pageLinks(rawQuery, page.nextCursor !== undefined && last ? last.id : undefined);
    return { images: items.map((i) => glanceImage(i, view)), first: links.first, schema: '/v2/schemas/images', ...(links.next ? { next: links.next } : {}) };
  });

  // a member project sees a shared image offered to it in any member status, as in Glance
  app.get('/v2/images/:id', { schema: { params: IdParams } }, async (req) => glanceImage(await findImage(imageAccess, sharing, req, req.params.id), view));

  app.patch('/v2/images/:id', { schema: { params: IdParams } }, async (req) => {
    const type = (header(req, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (!(PATCH_MEDIA_TYPES as readonly string[]).includes(type)) {
      throw new GlanceError(415, `The request media type ${type || '(none)'} is not supported by this server.`, {
        'accept-patch': PATCH_MEDIA_TYPES.join(', '),
      });
    }
    const ctx = ctxOf(req);
    const img = await imageAccess.getImage(ctx, req.params.id);
    const changes = applyImagePatch(img, req.body);
    const patch: Partial<ImageAttributes> = parseUpdateInput(changes.attrs);
    // attributes of their own that the patch removed are cleared (null in the catalog's patch)
    for (const attr of changes.cleared) (patch as Record<string, unknown>)[attr] = null;
    const ownership: OwnershipInput = changes.visibility === undefined ? {} : { visibility: changes.visibility };
    if (Object.keys(patch).length === 0 && ownership.visibility === undefined) return glanceImage(img, view);
    return glanceImage(await imageAccess.updateImage(ctx, img.id, patch, ownership), view);
  });

  app.delete('/v2/images/:id', { schema: { params: IdParams }, config: NO_BODY }, async (req, reply) => {
    await imageAccess.deleteImage(ctxOf(req), req.params.id);
    return reply.code(204).send();
  });

  for (const [action, enabled] of [
    ['deactivate', false],
    ['reactivate', true],
  ] as const) {
    app.post(`/v2/images/:id/actions/${action}`, { schema: { params: IdParams }, config: NO_BODY }, async (req, reply) => {
      const ctx = ctxOf(req);
      const img = await imageAccess.getImage(ctx, req.params.id);
      // Glance answers 204 when the image is already where the action would take it
      const already = enabled ? img.state === 'ready' : img.state === 'disabled';
      if (!already) {
        if (img.state !== 'ready' && img.state !== 'disabled') throw new GlanceError(403, `Not allowed to ${action} image in status '${glanceStatus(img)}'`);
        await imageAccess.setEnabled(ctx, img.id, enabled);
      }
      return reply.code(204).send();
    });
  }

  app.put('/v2/images/:id/tags/:tag', { schema: { params: TagParams }, config: NO_BODY }, async (req, reply) => {
    const ctx = ctxOf(req);
    const img = await imageAccess.getImage(ctx, req.params.id);
    if (!img.tags.includes(req.params.tag)) await imageAccess.updateImage(ctx, img.id, parseUpdateInput({ tags: [...img.tags, req.params.tag] }), {});
    return reply.code(204).send();
  });

  app.delete('/v2/images/:id/tags/:tag', { schema: { params: TagParams }, config: NO_BODY }, async (req, reply) => {
    const ctx = ctxOf(req);
    const img = await imageAccess.getImage(ctx, req.params.id);
    if (!img.tags.includes(req.params.tag)) throw new GlanceError(404, `Tag ${req.params.tag} not found.`);
    await imageAccess.updateImage(ctx, img.id, parseUpdateInput({ tags: img.tags.filter((t) => t !== req.params.tag) }), {});
    return reply.code(204).send();
  });
};
