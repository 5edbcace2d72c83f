/**
 * The authorization check every door calls (REST now; Glance, OCI and the console later): a
 * principal, an action and a resource in, the resource or the refusal out. It asks the policy
 * (`policy.ts`) and refuses with the status the access model fixes — 401 for no or bad
 * credentials, 404 where the caller may not know the image exists, 403 where it may see but not
 * do. It records nothing: the services that act (`image-access.ts`, `project-admin.ts`, ...)
 * audit their mutations through `audit-log.ts`.
 */
import type { AccessRepository, Project } from './access-repository.js';
import { DomainError, forbidden, notFound } from '../errors.js';
import type { AccessScope, Image } from '../images/image.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import { formatMode, rightsOn, type MemberStatus, type Principal, type Right } from './policy.js';

export interface RequestContext {
  principal: Principal;
  /** client address, for the audit log */
  remote?: string;
}

const NEEDS: Record<Right, string> = {
  use: 'reader',
  manage: 'writer (or the owner class of the permission bits)',
  admin: 'admin of the owning project',
};

export class Authorizer {
  constructor(
    private readonly images: ImageCatalog,
    private readonly access: AccessRepository,
  ) {}

  /** The image and the caller's rights on it; 401/404 when the caller may not know it exists. */
  async see(ctx: RequestContext, id: string): Promise<{ image: Image; rights: Set<Right> }> {
    let image: Image;
    try {
      image = await this.images.get(id);
    } catch (e) {
      if (ctx.principal.kind === 'anonymous' && e instanceof DomainError && e.code === 'IMAGE_NOT_FOUND') throw needLogin();
      throw e;
    }
    const rights = await this.rightsOn(ctx.principal, image);
    if (!rights.has('use')) {
      if (ctx.principal.kind === 'anonymous') throw needLogin();
      throw notFound(id);
    }
    return { image, rights };
  }

  /** True when `p` may see this image (event stream filter). */
  async canSee(p: Principal, image: Image): Promise<boolean> {
    return (await this.rightsOn(p, image)).has('use');
  }

  /** The rights `p` has on `image`, counting the member status of p's projects for a shared one. */
  async rightsOn(p: Principal, image: Image): Promise<Set<Right>> {
    return rightsOn(p, image, await this.memberStatusOf(p, image));
  }

  private async memberStatusOf(p: Principal, image: Image): Promise<MemberStatus | undefined> {
    if (image.visibility !== 'shared' || p.roles.size === 0) return undefined;
    const members = await this.images.repo.members(image.id);
    let best: MemberStatus | undefined;
    for (const m of members) {
      if (!p.roles.has(m.project)) continue;
      if (m.status === 'accepted') return 'accepted';
      best ??= m.status;
    }
    return best;
  }

  /** The image, when the caller holds `right` on it; `what` names the action in the refusal. */
  async require(ctx: RequestContext, id: string, right: Right, what: string): Promise<Image> {
    const { image, rights } = await this.see(ctx, id);
    if (!rights.has(right)) {
      const role = image.project ? ctx.principal.roles.get(image.project) : undefined;
      const has =
        image.project === undefined
          ? 'it is a cluster-scope image (server administrators only)'
          : role
            ? `your role in project ${image.project} is ${role}`
            : `you are not in project ${image.project}`;
      throw forbidden(`you may not ${what} image ${id}: ${has}; this needs ${NEEDS[right]} (permissions ${formatMode(image.perms)})`, {
        id,
        needs: right,
        project: image.project,
      });
    }
    return image;
  }

  /** The caller, unless anonymous (401). */
  authenticated(ctx: RequestContext): Principal {
    if (ctx.principal.kind === 'anonymous') throw needLogin();
    return ctx.principal;
  }

  serverAdmin(ctx: RequestContext, what: string): void {
    const p = this.authenticated(ctx);
    if (!p.serverAdmin) throw forbidden(`only server administrators ${what}`);
  }

  async projectAdmin(ctx: RequestContext, project: string, what: string): Promise<void> {
    const p = this.authenticated(ctx);
    if (!(await this.access.project(project))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
    if (!p.serverAdmin && p.roles.get(project) !== 'admin')
      throw forbidden(`you may not ${what} project ${project}: this needs admin there (your role: ${p.roles.get(project) ?? 'none'})`);
  }

  /** The project, when `p` is a member (or a server admin); otherwise it does not exist for `p`. */
  async visibleProject(p: Principal, name: string): Promise<Project> {
    const project = await this.access.project(name);
    if (!project || !(p.serverAdmin || p.roles.has(name)))
      throw new DomainError('NOT_FOUND', `project "${name}" does not exist (or you are not a member)`, { project: name });
    return project;
  }
}

export function needLogin(): DomainError {
  return new DomainError(
    'UNAUTHENTICATED',
    'authentication required: send "Authorization: Bearer <token>" (create one with "imago token create", or use an OIDC access token)',
  );
}

/** What `p` may list, as the catalog's query filter (the SQL form of the policy's `use`). */
export function scopeOf(p: Principal): AccessScope {
  const adminProjects: string[] = [];
  const memberProjects: string[] = [];
  for (const [proj, role] of p.roles) (role === 'admin' ? adminProjects : memberProjects).push(proj);
  return { anonymous: p.kind === 'anonymous', user: p.user, adminProjects, memberProjects };
}
