/** `/api/v1/images`: create, list, show, update, delete, disable/enable, and URL imports. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MEMBER_STATUSES, VISIBILITIES } from '../../domain/access/policy.js';
import type { ImageAccess } from '../../domain/access/image-access.js';
import { parseCreateInput, parseUpdateInput, takeOwnership } from '../../domain/images/image-input.js';
import { ctxOf } from '../http/principal.js';
import { header } from '../http/request-header.js';
import { DomainError } from '../../domain/errors.js';
import { createdImageSchema, imageJson, imageSchema } from './image-json.js';
import { uploadUrlJson } from './tus-routes.js';
import { parseListQuery } from './list-query.js';
import { IdParams, nullableString, stringEnum, stringList } from './request-schemas.js';

const ListQuery = Type.Object({
  name: Type.Optional(Type.String({ description: 'exact name, or a prefix ending in *' })),
  state: Type.Optional(stringList('pending, importing, ready, disabled, error, locked (repeat or comma-separate)')),
  type: Type.Optional(stringList('OS, CDROM, DATABLOCK, KERNEL, RAMDISK, CONTEXT')),
  diskFormat: Type.Optional(stringList('raw, qcow2, vmdk, ...')),
  tag: Type.Optional(stringList('every tag must be present')),
  property: Type.Optional(stringList('key=value; every one must match')),
  createdAfter: Type.Optional(Type.String({ format: 'date-time' })),
  createdBefore: Type.Optional(Type.String({ format: 'date-time' })),
  updatedAfter: Type.Optional(Type.String({ format: 'date-time' })),
  updatedBefore: Type.Optional(Type.String({ format: 'date-time' })),
  sort: Type.Optional(Type.String({ description: 'name|createdAt|updatedAt|storedSize|virtualSize[:asc|desc]' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  cursor: Type.Optional(Type.String({ description: 'nextCursor of the previous page' })),
  project: Type.Optional(Type.String({ description: 'only images of this project' })),
  visibility: Type.Optional(stringList('private, project, shared, public')),
  memberStatus: Type.Optional(stringEnum(MEMBER_STATUSES, { description: 'images shared with your projects with this member status (offers: pending)' })),
});

export const imageRoutes: FastifyPluginAsyncTypebox<{ imageAccess: ImageAccess }> = async (app, { imageAccess }) => {
  app.post(
    '/images',
    {
      schema: {
        summary: 'Create an image (metadata only; upload or import the bytes next)',
        tags: ['images'],
        headers: Type.Object({
          'idempotency-key': Type.Optional(Type.String({ maxLength: 255, description: 'retries with the same key return the first image' })),
        }),
        // the domain reads the attributes (parseCreateInput): only the fields below are typed here
        body: Type.Object(
          {
            name: Type.Optional(Type.String()),
            project: Type.Optional(nullableString({ description: 'owning project (default: your only project); null = cluster scope (server admins)' })),
            visibility: Type.Optional(stringEnum(VISIBILITIES, { description: 'default project (private when project is null; only private or public then)' })),
            upload: Type.Optional(
              Type.Boolean({ description: 'also make an upload URL (answered as uploadUrl): PUT the bytes to it, or use it with the tus endpoint' }),
            ),
          },
          { additionalProperties: true },
        ),
        response: {
          201: createdImageSchema('the image'),
          200: createdImageSchema('the image created by an earlier request with this Idempotency-Key'),
        },
      },
    },
    async (req, reply) => {
      const { upload, ...body } = req.body;
      const { rest, ownership } = takeOwnership(body);
      const input = parseCreateInput(rest);
      const key = header(req, 'idempotency-key');
      const { image, replayed } = await imageAccess.createImage(ctxOf(req), input, ownership, key);
      void reply.code(replayed ? 200 : 201).header('location', `/api/v1/images/${image.id}`);
      if (upload !== true) return imageJson(image);
      if (image.state !== 'pending' && image.state !== 'error') {
        throw new DomainError('INVALID_STATE', `image ${image.id} (created earlier with this Idempotency-Key) is ${image.state}: it takes no upload any more`);
      }
      const made = await imageAccess.createUploadUrl(ctxOf(req), image.id);
      return { ...imageJson(image), uploadUrl: uploadUrlJson(req, made) };
    },
  );

  app.get(
    '/images',
    {
      schema: {
        summary: 'List images with filters, sort and cursor pagination',
        tags: ['images'],
        querystring: ListQuery,
        response: { 200: Type.Object({ images: Type.Optional(Type.Array(imageSchema())), nextCursor: Type.Optional(Type.String()) }) },
      },
    },
    async (req) => {
      const page = await imageAccess.listImages(ctxOf(req), parseListQuery(req.query));
      return { images: page.items.map(imageJson), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/images/:id',
    { schema: { summary: 'Show an image', tags: ['images'], params: IdParams, response: { 200: imageSchema('the image') } } },
    async (req) => imageJson(await imageAccess.getImage(ctxOf(req), req.params.id)),
  );

  app.patch(
    '/images/:id',
    {
      schema: {
        summary: 'Update image metadata',
        tags: ['images'],
        params: IdParams,
        // any attributes: the domain reads and checks them (parseUpdateInput)
        body: Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true }),
        response: { 200: imageSchema('the image') },
      },
    },
    async (req) => {
      const { rest, ownership } = takeOwnership(req.body);
      return imageJson(await imageAccess.updateImage(ctxOf(req), req.params.id, parseUpdateInput(rest), ownership));
    },
  );

  app.delete('/images/:id', { schema: { summary: 'Delete an image (409 while locked or in use)', tags: ['images'], params: IdParams } }, async (req, reply) => {
    await imageAccess.deleteImage(ctxOf(req), req.params.id);
    return reply.code(204).send();
  });

  for (const action of ['disable', 'enable'] as const) {
    app.post(
      `/images/:id/${action}`,
      {
        schema: {
          summary: `${action[0]!.toUpperCase()}${action.slice(1)} an image`,
          tags: ['images'],
          params: IdParams,
          response: { 200: imageSchema('the image') },
        },
      },
      async (req) => imageJson(await imageAccess.setEnabled(ctxOf(req), req.params.id, action === 'enable')),
    );
  }

  app.post(
    '/images/:id/import',
    {
      schema: {
        summary: 'Import the image bytes from an http(s) URL, as a background job with progress (same ingest path as uploads)',
        tags: ['images'],
        params: IdParams,
        body: Type.Object({ url: Type.String({ maxLength: 8192 }) }),
        response: { 202: imageSchema('the image') },
      },
    },
    async (req, reply) => {
      const image = await imageAccess.startImport(ctxOf(req), req.params.id, req.body.url);
      return reply.code(202).send(imageJson(image));
    },
  );
  app.delete(
    '/images/:id/import',
    { schema: { summary: 'Cancel a running import', tags: ['images'], params: IdParams, response: { 200: imageSchema('the image') } } },
    async (req) => {
      return imageJson(await imageAccess.cancelImport(ctxOf(req), req.params.id));
    },
  );
};
