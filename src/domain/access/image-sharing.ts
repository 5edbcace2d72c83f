/**
 * Image sharing (Glance's image members): an image with visibility `shared` is offered to other
 * projects, which accept or reject the offer. The owning project's admins add and remove
 * members; the member project's writers answer. Every mutation is audited.
 */
import type { AccessRepository } from './access-repository.js';
import { conflict, DomainError, forbidden, invalid, notFound } from '../errors.js';
import type { Image, ImageMember } from '../images/image.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import type { AuditLog } from './audit-log.js';
import { needLogin, type Authorizer, type RequestContext } from './authorizer.js';
import { roleAtLeast, type MemberStatus } from './policy.js';

export class ImageSharing {
  constructor(
    private readonly images: ImageCatalog,
    private readonly access: AccessRepository,
    private readonly authz: Authorizer,
    private readonly audit: AuditLog,
  ) {}

  async members(ctx: RequestContext, id: string): Promise<ImageMember[]> {
    const p = ctx.principal;
    const image = await this.images.get(id).catch((e: unknown) => {
      if (p.kind === 'anonymous') throw needLogin();
      throw e;
    });
    const all = await this.images.repo.members(id);
    const rights = await this.authz.rightsOn(p, image);
    if (rights.has('admin')) return all;
    const mine = all.filter((m) => p.roles.has(m.project));
    if (mine.length) return mine;
    if (p.kind === 'anonymous') throw needLogin();
    if (rights.has('use')) throw forbidden(`only admins of project ${image.project ?? '(cluster)'} list the members of image ${id}`);
    throw notFound(id);
  }

  /**
   * A shared image offered to one of the caller's projects, whatever the member's answer so far
   * (Glance shows a shared image to its members in every status, so they can find it to answer);
   * the caller's rights stay those of `rightsOn` (use needs `accepted`). NOT_FOUND otherwise.
   */
  async offeredImage(ctx: RequestContext, id: string): Promise<Image> {
    const p = ctx.principal;
    if (p.kind === 'anonymous') throw needLogin();
    const image = await this.images.get(id);
    if (image.visibility === 'shared' && (await this.images.repo.members(id)).some((m) => p.roles.has(m.project))) return image;
    throw notFound(id);
  }

  /** `opts.exclusive`: an existing member is a CONFLICT (Glance's 409) instead of kept as it is. */
  addMember(ctx: RequestContext, id: string, project: string, opts: { exclusive?: boolean } = {}): Promise<ImageMember> {
    return this.audit.record(ctx, 'image.member.add', { target: id, detail: { member: project } }, async (note) => {
      const img = await this.authz.require(ctx, id, 'admin', 'share');
      note(img);
      if (img.visibility !== 'shared') {
        throw new DomainError(
          'INVALID_STATE',
          `image ${id} has visibility ${img.visibility}; set it to "shared" before adding members (PATCH {"visibility":"shared"} or "imago image update ${id} --visibility shared")`,
          { id, visibility: img.visibility },
        );
      }
      if (project === img.project) throw invalid(`project ${project} owns image ${id}; members are other projects`);
      if (!(await this.access.project(project))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
      if (opts.exclusive && (await this.images.repo.members(id)).some((m) => m.project === project))
        throw conflict(`project ${project} is already a member of image ${id}`);
      return this.images.repo.addMember(id, project);
    });
  }

  removeMember(ctx: RequestContext, id: string, project: string): Promise<void> {
    return this.audit.record(ctx, 'image.member.remove', { target: id, detail: { member: project } }, async (note) => {
      note(await this.authz.require(ctx, id, 'admin', 'unshare'));
      if (!(await this.images.repo.removeMember(id, project)))
        throw new DomainError('NOT_FOUND', `project ${project} is not a member of image ${id}`, { id, project });
    });
  }

  /** The member project's answer (accept/reject/back to pending): writers or admins of that project. */
  setMemberStatus(ctx: RequestContext, id: string, project: string, status: MemberStatus): Promise<ImageMember> {
    return this.audit.record(ctx, 'image.member.status', { target: id, project, detail: { member: project, status } }, async () => {
      const p = ctx.principal;
      if (p.kind === 'anonymous') throw needLogin();
      const canSee = await this.authz.see(ctx, id).then(
        () => true,
        () => false,
      );
      if (!(p.serverAdmin || p.roles.has(project))) {
        if (canSee) throw forbidden(`only writers or admins of project ${project} answer its offers; you are not in project ${project}`);
        throw notFound(id);
      }
      const row = (await this.images.repo.members(id)).find((m) => m.project === project);
      if (!row) {
        if (canSee) throw new DomainError('NOT_FOUND', `project ${project} is not a member of image ${id}`, { id, project });
        throw notFound(id);
      }
      if (!(p.serverAdmin || roleAtLeast(p.roles.get(project), 'writer'))) {
        throw forbidden(`answering an image offer for project ${project} needs writer or admin there; your role is ${p.roles.get(project)}`);
      }
      return (await this.images.repo.setMemberStatus(id, project, status))!;
    });
  }
}
