/**
 * `/image/v2/images/{id}/members`: Glance's image members onto Imago's sharing (`ImageSharing`).
 *
 * | Glance | Imago |
 * |---|---|
 * | `member_id` | a project name (the member project) |
 * | `POST …/members {"member"}` (200) | `ImageSharing.addMember` (admin right on the image); 409 when already a member |
 * | `GET …/members`, `GET …/members/{member}` | `ImageSharing.members`: the owner's admins see all, a member project its own row |
 * | `PUT …/members/{member} {"status"}` | `ImageSharing.setMemberStatus`: writers or admins of the member project only |
 * | `DELETE …/members/{member}` (204) | `ImageSharing.removeMember` (admin right on the image) |
 *
 * Glance's rules: only `shared` images have members (403 otherwise; 404 on show, which hides the
 * refusal); a member project finds the image whatever its status, so it can answer the offer.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { ImageAccess } from '../../domain/access/image-access.js';
import type { ImageSharing } from '../../domain/access/image-sharing.js';
import { MEMBER_STATUSES, type MemberStatus } from '../../domain/access/policy.js';
import { DomainError } from '../../domain/errors.js';
import type { Image, ImageMember } from '../../domain/images/image.js';
import { ctxOf } from '../http/principal.js';
import { GlanceError } from './error-table.js';
import { glanceTime } from './image-view.js';

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const MemberParams = Type.Object({ id: Type.String({ maxLength: 64 }), member: Type.String({ maxLength: 255 }) });
/** glanceclient sends bodiless requests as application/octet-stream: those routes take no body and read none */
const NO_BODY = { rawBody: true } as const;

export interface GlanceMemberRoutesOptions {
  imageAccess: ImageAccess;
  sharing: ImageSharing;
}

/** A member as Glance 25.1 serializes one (image_members.py `_format_image_member`). */
export function glanceMember(m: ImageMember): Record<string, unknown> {
  return {
    created_at: glanceTime(m.createdAt),
    image_id: m.imageId,
    member_id: m.project,
    schema: '/v2/schemas/member',
    status: m.status,
    updated_at: glanceTime(m.updatedAt),
  };
}

/**
 * The image as a Glance member lookup finds it: one the caller may see, or a shared one offered to
 * one of the caller's projects (any member status).
 */
export async function findImage(imageAccess: ImageAccess, sharing: ImageSharing, req: FastifyRequest, id: string): Promise<Image> {
  const ctx = ctxOf(req);
  try {
    return await imageAccess.getImage(ctx, id);
  } catch (e) {
    if (!(e instanceof DomainError && e.code === 'IMAGE_NOT_FOUND')) throw e;
    return sharing.offeredImage(ctx, id);
  }
}

/**
 * The owner's change on behalf of a caller who found the image (a member in any status): the access
 * model hides the image from a member that has not accepted (IMAGE_NOT_FOUND), Glance refuses (403).
 */
async function ownerOnly<T>(what: string, id: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof DomainError && e.code === 'IMAGE_NOT_FOUND')
      throw new GlanceError(403, `Not allowed to ${what} members for image ${id}: only the owning project's admins do.`);
    throw e;
  }
}

function sharedOnly(img: Image): void {
  if (img.visibility !== 'shared')
    throw new GlanceError(
      403,
      `Error fetching members of image ${img.id}: Only shared images have members. Set its visibility to shared first (openstack image set --shared ${img.id}).`,
    );
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new GlanceError(400, 'Body expected in request.');
  return body as Record<string, unknown>;
}

export const glanceMemberRoutes: FastifyPluginAsyncTypebox<GlanceMemberRoutesOptions> = async (app, { imageAccess, sharing }) => {
  // openstackclient looks a member project up in Keystone (`image add project`, `image set --accept
  // --project`); with admin_token auth it asks the image endpoint. A 403 there is what makes it use
  // the name as given (osc's find_project), as it does for a user Keystone does not let look.
  for (const path of ['/v2/projects', '/v2/projects/:id']) {
    app.get(path, async () => {
      throw new GlanceError(403, 'This server does not serve the identity API: a member is named by its project (openstack image add project IMAGE PROJECT).');
    });
  }

  app.post('/v2/images/:id/members', { schema: { params: IdParams } }, async (req) => {
    const body = bodyObject(req.body);
    if (!Object.hasOwn(body, 'member')) throw new GlanceError(400, 'Member to be added not specified');
    const member = body.member;
    if (member === null || member === '' || member === undefined) throw new GlanceError(400, "Member can't be empty");
    if (typeof member !== 'string') throw new GlanceError(400, 'Member must be a project name (a string).');
    const img = await findImage(imageAccess, sharing, req, req.params.id);
    sharedOnly(img);
    try {
      return glanceMember(await ownerOnly('create', img.id, () => sharing.addMember(ctxOf(req), img.id, member, { exclusive: true })));
    } catch (e) {
      if (e instanceof DomainError && e.code === 'CONFLICT') throw new GlanceError(409, `Member ${member} is duplicated for image ${img.id}`);
      throw e;
    }
  });

  app.get('/v2/images/:id/members', { schema: { params: IdParams } }, async (req) => {
    const img = await findImage(imageAccess, sharing, req, req.params.id);
    sharedOnly(img);
    const members = await sharing.members(ctxOf(req), img.id);
    return { members: members.map(glanceMember), schema: '/v2/schemas/members' };
  });

  app.get('/v2/images/:id/members/:member', { schema: { params: MemberParams } }, async (req) => {
    const img = await findImage(imageAccess, sharing, req, req.params.id);
    // Glance turns this refusal into 404, not to tell who may not see the members that the image has them
    if (img.visibility !== 'shared') throw new GlanceError(404, `${req.params.member} not found in the member list of the image ${img.id}.`);
    let members: ImageMember[];
    try {
      members = await sharing.members(ctxOf(req), img.id);
    } catch (e) {
      if (e instanceof DomainError && e.code === 'FORBIDDEN') members = [];
      else throw e;
    }
    const m = members.find((x) => x.project === req.params.member);
    if (!m) throw new GlanceError(404, `${req.params.member} not found in the member list of the image ${img.id}.`);
    return glanceMember(m);
  });

  app.put('/v2/images/:id/members/:member', { schema: { params: MemberParams } }, async (req) => {
    const body = bodyObject(req.body);
    if (!Object.hasOwn(body, 'status')) throw new GlanceError(400, 'Status not specified');
    const status = body.status;
    if (typeof status !== 'string' || !(MEMBER_STATUSES as readonly string[]).includes(status))
      throw new GlanceError(400, 'Incorrect request: Status must be "pending", "accepted" or "rejected".');
    const img = await findImage(imageAccess, sharing, req, req.params.id);
    sharedOnly(img);
    return glanceMember(await sharing.setMemberStatus(ctxOf(req), img.id, req.params.member, status as MemberStatus));
  });

  app.delete('/v2/images/:id/members/:member', { schema: { params: MemberParams }, config: NO_BODY }, async (req, reply) => {
    const img = await findImage(imageAccess, sharing, req, req.params.id);
    sharedOnly(img);
    await ownerOnly('delete', img.id, () => sharing.removeMember(ctxOf(req), img.id, req.params.member));
    return reply.code(204).send();
  });
};
