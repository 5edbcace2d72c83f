/**
 * The policy enforcement point: every door (REST now; Glance, OCI and the console later) calls
 * these methods with the request's principal, never the image services directly. Each method asks the
 * policy (`access.ts`), refuses with the status the issue fixes — 401 for no or bad credentials,
 * 404 where the caller may not know the image exists, 403 where it may see but not do — and
 * writes one audit entry for every mutating action, allowed or refused.
 */
import type { Readable } from 'node:stream';
import type { ByteRange, Digest } from '../store/blob-store.js';
import {
  CLUSTER_VISIBILITIES,
  clusterMode,
  formatMode,
  modeForVisibility,
  parseMode,
  rightsOn,
  roleAtLeast,
  ROLES,
  visibilityForMode,
  type MemberStatus,
  type Principal,
  type Right,
  type Role,
  type Visibility,
} from './access.js';
import type { AccessRepository, AuditEntry, AuditQuery, ClaimRule, Grant, OidcIssuer, Project, QuotaLimits, TokenRecord } from './access-repository.js';
import { mintToken, type Authenticator } from './authenticator.js';
import { DomainError, forbidden, invalid, notFound } from './errors.js';
import type { AccessScope, Image, ImageMember, ImagePage, ImagePatch, ImageQuery, ImageAttributes, ProjectUsage } from './images/image.js';
import { CONVERT_FORMATS } from './images/image.js';
import type { CreateImageInput, OwnershipInput } from './images/image-input.js';
import type { ImageCatalog } from './images/image-catalog.js';
import type { IngestCoordinator } from './images/ingest-coordinator.js';
import type { VariantRead, VariantService } from './images/variant-service.js';
import type { ConvertTarget } from './images/variants.js';
import type { ImportRunner } from './import-runner.js';

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

export class AccessService {
  constructor(
    private readonly images: ImageCatalog,
    private readonly ingests: IngestCoordinator,
    private readonly variants: VariantService,
    private readonly access: AccessRepository,
    readonly auth: Authenticator,
    private readonly imports?: ImportRunner,
  ) {}

  authenticate(authorization: string | undefined): Promise<Principal> {
    return this.auth.authenticate(authorization);
  }

  // ---- images -------------------------------------------------------------------------------

  /** The image and the caller's rights on it; 401/404 when the caller may not know it exists. */
  async see(ctx: RequestContext, id: string): Promise<{ image: Image; rights: Set<Right> }> {
    let image: Image;
    try {
      image = await this.images.get(id);
    } catch (e) {
      if (ctx.principal.kind === 'anonymous' && e instanceof DomainError && e.code === 'IMAGE_NOT_FOUND') throw needLogin();
      throw e;
    }
    const rights = rightsOn(ctx.principal, image, await this.memberStatusOf(ctx.principal, image));
    if (!rights.has('use')) {
      if (ctx.principal.kind === 'anonymous') throw needLogin();
      throw notFound(id);
    }
    return { image, rights };
  }

  /** True when `p` may see this image (event stream filter). */
  async canSee(p: Principal, image: Image): Promise<boolean> {
    return rightsOn(p, image, await this.memberStatusOf(p, image)).has('use');
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

  private async require(ctx: RequestContext, id: string, right: Right, what: string): Promise<Image> {
    const { image, rights } = await this.see(ctx, id);
    if (!rights.has(right)) {
      const role = image.project ? ctx.principal.roles.get(image.project) : undefined;
      const has = image.project === undefined ? 'it is a cluster-scope image (server administrators only)' : role ? `your role in project ${image.project} is ${role}` : `you are not in project ${image.project}`;
      throw forbidden(`you may not ${what} image ${id}: ${has}; this needs ${NEEDS[right]} (permissions ${formatMode(image.perms)})`, { id, needs: right, project: image.project });
    }
    return image;
  }

  listImages(ctx: RequestContext, query: ImageQuery): Promise<ImagePage> {
    const p = ctx.principal;
    if (query.memberStatus && p.kind === 'anonymous') throw needLogin();
    if (p.serverAdmin && !query.memberStatus) return this.images.list(query);
    return this.images.list({ ...query, access: scopeOf(p) });
  }

  getImage(ctx: RequestContext, id: string): Promise<Image> {
    return this.see(ctx, id).then((s) => s.image);
  }

  async createImage(ctx: RequestContext, input: CreateImageInput, ownership: OwnershipInput, idempotencyKey?: string): Promise<{ image: Image; replayed: boolean }> {
    const p = ctx.principal;
    // default: the caller's only project; a server admin without projects creates cluster-scope images
    const project = ownership.project === undefined ? (defaultProject(p) ?? (p.serverAdmin && p.roles.size === 0 ? null : undefined)) : ownership.project;
    return this.audited(ctx, 'image.create', { target: input.name, project: project ?? undefined }, async (note) => {
      if (p.kind === 'anonymous') throw needLogin();
      if (project === undefined) {
        throw invalid(`say which project the image belongs to ("project"); you have roles in ${[...p.roles.keys()].join(', ') || 'no project'}`, { field: 'project' });
      } else if (project === null) {
        if (!p.serverAdmin) throw forbidden('only server administrators create cluster-scope images (project null); name a project instead');
      } else {
        if (!(await this.access.project(project))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist; create it with "imago project create ${project}"`, { project });
        if (!p.serverAdmin && !roleAtLeast(p.roles.get(project), 'writer')) {
          throw p.roles.has(project)
            ? forbidden(`you may not create images in project ${project}: your role is ${p.roles.get(project)}; this needs writer`)
            : forbidden(`you may not create images in project ${project}: you are not a member of it`);
        }
      }
      const visibility = ownership.visibility ?? (project === null ? 'private' : 'project');
      if (visibility === 'public' && !p.serverAdmin) throw forbidden('only server administrators make images public (as Glance\'s publicize_image); use "project" or "shared"');
      if (project === null) clusterScopeOnly(visibility);
      const perms = project === null ? clusterMode(visibility) : modeForVisibility(0o660, visibility);
      const r = await this.images.create(input, idempotencyKey, { project: project ?? undefined, owner: p.user, visibility, perms });
      note({ id: r.image.id });
      return r;
    });
  }

  async updateImage(ctx: RequestContext, id: string, patch: Partial<ImageAttributes>, ownership: OwnershipInput): Promise<Image> {
    return this.audited(ctx, 'image.update', { target: id }, async (note) => {
      if (ownership.project !== undefined) throw invalid('an image cannot move to another project; create a new image there (or clone it)', { field: 'project' });
      const wantsVisibility = ownership.visibility !== undefined;
      const needs: Right = wantsVisibility ? 'admin' : 'manage';
      const img = await this.require(ctx, id, needs, wantsVisibility ? 'change the visibility of' : 'update');
      note(img);
      if (wantsVisibility && Object.keys(patch).length > 0) await this.require(ctx, id, 'manage', 'update');
      const full: ImagePatch = { ...patch };
      if (wantsVisibility) {
        const v = ownership.visibility!;
        if (v === 'public' && img.visibility !== 'public' && !ctx.principal.serverAdmin) throw forbidden('only server administrators make images public (as Glance\'s publicize_image)');
        full.visibility = v;
        if (img.project === undefined) clusterScopeOnly(v);
        full.perms = img.project === undefined ? clusterMode(v) : modeForVisibility(img.perms, v);
      }
      return this.images.update(id, full);
    });
  }

  async chmod(ctx: RequestContext, id: string, mode: string): Promise<Image> {
    return this.audited(ctx, 'image.chmod', { target: id, detail: { mode } }, async (note) => {
      const img = await this.require(ctx, id, 'admin', 'change the permissions of');
      note(img);
      let bits: number;
      try {
        bits = parseMode(mode);
      } catch (e) {
        throw invalid((e as Error).message, { field: 'mode' });
      }
      const visibility = visibilityForMode(bits, img.visibility);
      if (img.project === undefined && (bits & 0o070) !== 0) {
        throw invalid(`mode ${mode} gives the group digit rights, but image ${id} has no project (cluster scope); use 600 (server admins only) or 604 (public)`, { field: 'mode' });
      }
      if (visibility === 'public' && img.visibility !== 'public' && !ctx.principal.serverAdmin) throw forbidden(`mode ${mode} gives "other" use, which makes the image public; only server administrators do that`);
      return this.images.update(id, { perms: bits, visibility });
    });
  }

  deleteImage(ctx: RequestContext, id: string): Promise<void> {
    return this.audited(ctx, 'image.delete', { target: id }, async (note) => {
      note(await this.require(ctx, id, 'manage', 'delete'));
      await this.images.delete(id);
    });
  }

  setEnabled(ctx: RequestContext, id: string, enabled: boolean): Promise<Image> {
    return this.audited(ctx, enabled ? 'image.enable' : 'image.disable', { target: id }, async (note) => {
      note(await this.require(ctx, id, 'manage', enabled ? 'enable' : 'disable'));
      return enabled ? this.images.enable(id) : this.images.disable(id);
    });
  }

  upload(ctx: RequestContext, id: string, body: AsyncIterable<Uint8Array>, opts: { announcedSize?: number; signal?: AbortSignal }): Promise<Image> {
    return this.audited(ctx, 'image.upload', { target: id, detail: opts.announcedSize === undefined ? undefined : { announcedSize: opts.announcedSize } }, async (note) => {
      note(await this.require(ctx, id, 'manage', 'upload to'));
      return this.ingests.upload(id, body, opts);
    });
  }

  async openFile(ctx: RequestContext, id: string, range?: ByteRange): Promise<{ image: Image; stream: Readable }> {
    await this.see(ctx, id);
    return this.variants.openFile(id, range);
  }

  /** The image's bytes in another format (a stored variant, or converted now): the same `use` right as openFile. */
  async openVariant(ctx: RequestContext, id: string, target: ConvertTarget, opts: { rangeFor?: (sizeBytes: number, digest: Digest) => ByteRange | null; head?: boolean } = {}): Promise<VariantRead> {
    await this.see(ctx, id);
    return this.variants.openVariant(id, target, opts);
  }

  startImport(ctx: RequestContext, id: string, url: string): Promise<Image> {
    return this.audited(ctx, 'image.import', { target: id, detail: { url: url.split('?')[0]!.slice(0, 500) } }, async (note) => {
      const img = await this.require(ctx, id, 'manage', 'import into');
      note(img);
      if (!this.imports) throw new DomainError('UNAVAILABLE', 'URL imports are not enabled on this server');
      if (img.project !== undefined) {
        const project = await this.access.project(img.project);
        const limit = project?.quota.imports;
        if (limit !== undefined) {
          const used = await this.images.repo.usage(img.project);
          if (used.imports + 1 > limit) {
            throw new DomainError(
              'QUOTA_EXCEEDED',
              `project ${img.project} is over its concurrent imports quota: ${used.imports} running, limit ${limit}; wait for one to finish, or ask an administrator to raise the limit (see "imago quota show ${img.project}")`,
              { project: img.project, limit: 'imports', max: limit, used: used.imports },
            );
          }
        }
      }
      return this.imports.start(id, url);
    });
  }

  cancelImport(ctx: RequestContext, id: string): Promise<Image> {
    return this.audited(ctx, 'image.import.cancel', { target: id }, async (note) => {
      note(await this.require(ctx, id, 'manage', 'cancel the import of'));
      if (!this.imports) throw new DomainError('UNAVAILABLE', 'URL imports are not enabled on this server');
      return this.imports.cancel(id);
    });
  }

  // ---- members (Glance image sharing) -------------------------------------------------------

  async members(ctx: RequestContext, id: string): Promise<ImageMember[]> {
    const p = ctx.principal;
    const image = await this.images.get(id).catch((e: unknown) => {
      if (p.kind === 'anonymous') throw needLogin();
      throw e;
    });
    const all = await this.images.repo.members(id);
    const rights = rightsOn(p, image, await this.memberStatusOf(p, image));
    if (rights.has('admin')) return all;
    const mine = all.filter((m) => p.roles.has(m.project));
    if (mine.length) return mine;
    if (p.kind === 'anonymous') throw needLogin();
    if (rights.has('use')) throw forbidden(`only admins of project ${image.project ?? '(cluster)'} list the members of image ${id}`);
    throw notFound(id);
  }

  addMember(ctx: RequestContext, id: string, project: string): Promise<ImageMember> {
    return this.audited(ctx, 'image.member.add', { target: id, detail: { member: project } }, async (note) => {
      const img = await this.require(ctx, id, 'admin', 'share');
      note(img);
      if (img.visibility !== 'shared') {
        throw new DomainError('INVALID_STATE', `image ${id} has visibility ${img.visibility}; set it to "shared" before adding members (PATCH {"visibility":"shared"} or "imago image update ${id} --visibility shared")`, { id, visibility: img.visibility });
      }
      if (project === img.project) throw invalid(`project ${project} owns image ${id}; members are other projects`);
      if (!(await this.access.project(project))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
      return this.images.repo.addMember(id, project);
    });
  }

  removeMember(ctx: RequestContext, id: string, project: string): Promise<void> {
    return this.audited(ctx, 'image.member.remove', { target: id, detail: { member: project } }, async (note) => {
      note(await this.require(ctx, id, 'admin', 'unshare'));
      if (!(await this.images.repo.removeMember(id, project))) throw new DomainError('NOT_FOUND', `project ${project} is not a member of image ${id}`, { id, project });
    });
  }

  /** The member project's answer (accept/reject/back to pending): writers or admins of that project. */
  setMemberStatus(ctx: RequestContext, id: string, project: string, status: MemberStatus): Promise<ImageMember> {
    return this.audited(ctx, 'image.member.status', { target: id, project, detail: { member: project, status } }, async () => {
      const p = ctx.principal;
      if (p.kind === 'anonymous') throw needLogin();
      const canSee = await this.see(ctx, id).then(() => true, () => false);
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

  // ---- projects, grants, quotas -------------------------------------------------------------

  createProject(ctx: RequestContext, name: string, description?: string): Promise<Project> {
    return this.audited(ctx, 'project.create', { target: name, project: name }, async () => {
      this.serverAdmin(ctx, 'create projects');
      return this.access.createProject(name, description);
    });
  }

  async listProjects(ctx: RequestContext): Promise<(Project & { role?: Role })[]> {
    const p = this.authenticated(ctx);
    const all = await this.access.projects();
    if (p.serverAdmin) return all.map((x) => ({ ...x, role: p.roles.get(x.name) }));
    return all.filter((x) => p.roles.has(x.name)).map((x) => ({ ...x, role: p.roles.get(x.name) }));
  }

  async showProject(ctx: RequestContext, name: string): Promise<{ project: Project; grants?: Grant[]; usage: ProjectUsage }> {
    const p = this.authenticated(ctx);
    const project = await this.visibleProject(p, name);
    const grants = p.serverAdmin || p.roles.get(name) === 'admin' ? await this.access.grants(name) : undefined;
    return { project, grants, usage: await this.images.repo.usage(name, p.serverAdmin ? undefined : scopeOf(p)) };
  }

  deleteProject(ctx: RequestContext, name: string): Promise<void> {
    return this.audited(ctx, 'project.delete', { target: name, project: name }, async () => {
      this.serverAdmin(ctx, 'delete projects');
      const used = await this.images.repo.usage(name);
      if (used.images > 0) throw new DomainError('CONFLICT', `project ${name} still owns ${used.images} image(s); delete them first`, { project: name, images: used.images });
      if (!(await this.access.deleteProject(name))) throw new DomainError('NOT_FOUND', `project "${name}" does not exist`, { project: name });
    });
  }

  grant(ctx: RequestContext, g: Grant): Promise<Grant> {
    return this.audited(ctx, 'project.grant', { target: `${g.subjectKind}:${g.subject}`, project: g.project, detail: { role: g.role } }, async () => {
      await this.projectAdmin(ctx, g.project, 'grant roles in');
      if (!(ROLES as readonly string[]).includes(g.role)) throw invalid(`role must be one of ${ROLES.join(', ')}`, { field: 'role' });
      if (g.subjectKind === 'group' && !(await this.access.groupExists(g.subject))) throw new DomainError('NOT_FOUND', `group "${g.subject}" does not exist; create it with "imago group create ${g.subject}"`);
      if (g.subjectKind === 'user') await this.access.ensureUser(g.subject);
      await this.access.grant(g);
      return g;
    });
  }

  revokeGrant(ctx: RequestContext, project: string, kind: 'user' | 'group', subject: string): Promise<void> {
    return this.audited(ctx, 'project.revoke', { target: `${kind}:${subject}`, project }, async () => {
      await this.projectAdmin(ctx, project, 'revoke roles in');
      if (!(await this.access.revokeGrant(project, kind, subject))) throw new DomainError('NOT_FOUND', `${kind} ${subject} has no role in project ${project}`);
    });
  }

  async quota(ctx: RequestContext, project: string): Promise<{ project: string; limits: QuotaLimits; usage: ProjectUsage; rules: string[] }> {
    const p = this.authenticated(ctx);
    const proj = await this.visibleProject(p, project);
    return { project, limits: proj.quota, usage: await this.images.repo.usage(project, p.serverAdmin ? undefined : scopeOf(p)), rules: QUOTA_RULES };
  }

  /**
   * The project's convert-on-import target (server admins): a format, 'none' (keep images as
   * uploaded even when the server converts), or null (the server's setting applies).
   */
  setProjectConvertTo(ctx: RequestContext, project: string, convertTo: string | null): Promise<{ project: string; convertTo: string | null }> {
    return this.audited(ctx, 'project.convert-to', { target: project, project, detail: { convertTo } }, async () => {
      this.serverAdmin(ctx, 'set a project\'s conversion policy');
      if (convertTo !== null && convertTo !== 'none' && !(CONVERT_FORMATS as readonly string[]).includes(convertTo)) {
        throw invalid(`convertTo must be one of ${CONVERT_FORMATS.join(', ')}, "none" (keep as uploaded) or null (the server's setting)`, { field: 'convertTo' });
      }
      if (!(await this.images.repo.setProjectConvertTo(project, convertTo))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
      return { project, convertTo };
    });
  }

  async projectConvertTo(ctx: RequestContext, project: string): Promise<string | null> {
    await this.visibleProject(this.authenticated(ctx), project);
    return (await this.images.repo.projectConvertTo(project)) ?? null;
  }

  setQuota(ctx: RequestContext, project: string, limits: { [K in keyof QuotaLimits]?: number | null }): Promise<Project> {
    return this.audited(ctx, 'quota.set', { target: project, project, detail: limits }, async () => {
      this.serverAdmin(ctx, 'set quotas');
      for (const [k, v] of Object.entries(limits)) {
        if (v !== null && v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw invalid(`quota ${k} must be a whole number ≥ 0, or null for unlimited`, { field: k });
      }
      const p = await this.access.setQuota(project, limits);
      if (!p) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
      return p;
    });
  }

  // ---- users and groups (server admins) -----------------------------------------------------

  createUser(ctx: RequestContext, name: string, serverAdmin: boolean): Promise<void> {
    return this.audited(ctx, 'user.create', { target: name, detail: { serverAdmin } }, async () => {
      this.serverAdmin(ctx, 'create users');
      if (!/^[\w.@:+-]{1,255}$/.test(name)) throw invalid(`user name "${name.slice(0, 80)}" may hold letters, digits and . _ @ : + - (1–255)`);
      if (await this.access.user(name)) throw new DomainError('CONFLICT', `user "${name}" already exists`);
      await this.access.ensureUser(name, serverAdmin);
    });
  }

  async listUsers(ctx: RequestContext): Promise<{ name: string; serverAdmin: boolean; createdAt: Date; grants: Grant[] }[]> {
    this.serverAdmin(ctx, 'list users');
    const grants = await this.access.grants();
    return (await this.access.users()).map((u) => ({ ...u, grants: grants.filter((g) => g.subjectKind === 'user' && g.subject === u.name) }));
  }

  deleteUser(ctx: RequestContext, name: string): Promise<void> {
    return this.audited(ctx, 'user.delete', { target: name }, async () => {
      this.serverAdmin(ctx, 'delete users');
      if (name === ctx.principal.user) throw invalid('you cannot delete yourself');
      if (!(await this.access.deleteUser(name))) throw new DomainError('NOT_FOUND', `user "${name}" does not exist`);
    });
  }

  createGroup(ctx: RequestContext, name: string, description?: string): Promise<void> {
    return this.audited(ctx, 'group.create', { target: name }, async () => {
      this.serverAdmin(ctx, 'create groups');
      await this.access.createGroup(name, description);
    });
  }

  async listGroups(ctx: RequestContext): Promise<{ name: string; description?: string; members: string[] }[]> {
    this.serverAdmin(ctx, 'list groups');
    return this.access.groups();
  }

  deleteGroup(ctx: RequestContext, name: string): Promise<void> {
    return this.audited(ctx, 'group.delete', { target: name }, async () => {
      this.serverAdmin(ctx, 'delete groups');
      if (!(await this.access.deleteGroup(name))) throw new DomainError('NOT_FOUND', `group "${name}" does not exist`);
    });
  }

  groupMember(ctx: RequestContext, group: string, user: string, add: boolean): Promise<void> {
    return this.audited(ctx, add ? 'group.member.add' : 'group.member.remove', { target: group, detail: { user } }, async () => {
      this.serverAdmin(ctx, 'change group members');
      if (!(await this.access.groupExists(group))) throw new DomainError('NOT_FOUND', `group "${group}" does not exist`);
      if (add) {
        await this.access.ensureUser(user);
        await this.access.addGroupMember(group, user);
      } else if (!(await this.access.removeGroupMember(group, user))) throw new DomainError('NOT_FOUND', `${user} is not in group ${group}`);
    });
  }

  // ---- tokens -------------------------------------------------------------------------------

  /**
   * Mints an API token. Nobody mints more than they have: a server-admin token needs a server
   * admin; a project token needs at least its role in that project (or a server admin). Tokens
   * for another user need a project admin (or a server admin).
   */
  createToken(ctx: RequestContext, req: { name: string; project?: string; role: Role | 'server-admin'; expiresAt?: Date; user?: string }): Promise<{ record: TokenRecord; token: string }> {
    return this.audited(ctx, 'token.create', { target: req.name, project: req.project, detail: { role: req.role, user: req.user } }, async (note) => {
      const p = this.authenticated(ctx);
      if (!/^[\w .:@+-]{1,100}$/.test(req.name)) throw invalid('token name must be 1–100 letters, digits, spaces or . _ : @ + -', { field: 'name' });
      if (req.expiresAt && req.expiresAt.getTime() <= Date.now()) throw invalid('expiresAt is in the past', { field: 'expiresAt' });
      let project = req.project;
      if (req.role === 'server-admin') {
        if (!p.serverAdmin) throw forbidden('only server administrators create server-admin tokens');
        if (project !== undefined) throw invalid('a server-admin token has no project', { field: 'project' });
      } else {
        if (!(ROLES as readonly string[]).includes(req.role)) throw invalid(`role must be one of ${ROLES.join(', ')} or server-admin`, { field: 'role' });
        project ??= defaultProject(p) ?? undefined;
        if (project === undefined) throw invalid('say which project the token is for ("project")', { field: 'project' });
        if (!(await this.access.project(project))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
        if (!p.serverAdmin && !roleAtLeast(p.roles.get(project), req.role)) {
          throw forbidden(`you cannot create a ${req.role} token for project ${project}: your role there is ${p.roles.get(project) ?? 'none'}`);
        }
      }
      const user = req.user ?? p.user;
      if (user === undefined) throw invalid('say which user the token acts for ("user")', { field: 'user' });
      if (user !== p.user && !p.serverAdmin && !(project && p.roles.get(project) === 'admin')) throw forbidden('only project or server administrators create tokens for another user');
      await this.access.ensureUser(user);
      const minted = mintToken();
      const record: TokenRecord = {
        id: minted.id,
        name: req.name,
        user,
        role: req.role,
        createdAt: new Date(),
        createdBy: p.label,
        secretHash: minted.secretHash,
      };
      if (project !== undefined) record.project = project;
      if (req.expiresAt) record.expiresAt = req.expiresAt;
      await this.access.insertToken(record);
      note({ id: record.id });
      return { record, token: minted.token };
    });
  }

  async listTokens(ctx: RequestContext, filter: { project?: string; includeRevoked?: boolean } = {}): Promise<TokenRecord[]> {
    const p = this.authenticated(ctx);
    const all = await this.access.tokens({ project: filter.project, includeRevoked: filter.includeRevoked });
    return all.filter((t) => this.mayManageToken(p, t));
  }

  revokeToken(ctx: RequestContext, id: string): Promise<void> {
    return this.audited(ctx, 'token.revoke', { target: id }, async () => {
      const p = this.authenticated(ctx);
      const t = await this.access.token(id);
      if (!t || !this.mayManageToken(p, t)) throw new DomainError('NOT_FOUND', `token ${id} does not exist (or is not yours to see)`, { id });
      if (!(await this.access.revokeToken(id))) throw new DomainError('CONFLICT', `token ${id} was already revoked`, { id });
    });
  }

  private mayManageToken(p: Principal, t: TokenRecord): boolean {
    return p.serverAdmin || (p.user !== undefined && t.user === p.user) || (t.project !== undefined && p.roles.get(t.project) === 'admin');
  }

  // ---- OIDC ---------------------------------------------------------------------------------

  putIssuer(ctx: RequestContext, i: OidcIssuer): Promise<OidcIssuer> {
    return this.audited(ctx, 'oidc.issuer.put', { target: i.issuer }, async () => {
      this.serverAdmin(ctx, 'configure OIDC issuers');
      let u: URL;
      try {
        u = new URL(i.issuer);
      } catch {
        throw invalid(`issuer "${i.issuer.slice(0, 200)}" is not a URL`, { field: 'issuer' });
      }
      if (u.protocol !== 'https:' && !(u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname))) throw invalid('issuer must be an https URL', { field: 'issuer' });
      if (!i.audience) throw invalid('audience is required: the client id Imago\'s tokens are issued for', { field: 'audience' });
      await this.access.putIssuer(i);
      this.auth.forgetIssuer(i.issuer);
      return i;
    });
  }

  async listIssuers(ctx: RequestContext): Promise<{ issuers: OidcIssuer[]; rules: ClaimRule[] }> {
    this.serverAdmin(ctx, 'list OIDC settings');
    return { issuers: await this.access.issuers(), rules: await this.access.rules() };
  }

  deleteIssuer(ctx: RequestContext, issuer: string): Promise<void> {
    return this.audited(ctx, 'oidc.issuer.delete', { target: issuer }, async () => {
      this.serverAdmin(ctx, 'configure OIDC issuers');
      if (!(await this.access.deleteIssuer(issuer))) throw new DomainError('NOT_FOUND', `issuer ${issuer} is not configured`);
      this.auth.forgetIssuer(issuer);
    });
  }

  addRule(ctx: RequestContext, rule: Omit<ClaimRule, 'id'>): Promise<ClaimRule> {
    return this.audited(ctx, 'oidc.rule.add', { target: `${rule.claim}=${rule.value}`, project: rule.project, detail: { role: rule.role, group: rule.group } }, async () => {
      this.serverAdmin(ctx, 'map OIDC claims');
      const placeholders = rule.value.split('{project}').length - 1;
      if (placeholders > 1) throw invalid('a rule value holds at most one {project}', { field: 'value' });
      if (!rule.role && !rule.group) throw invalid('a rule grants a role (with a project or {project}) or a group membership', { field: 'role' });
      if (rule.role && !(ROLES as readonly string[]).includes(rule.role)) throw invalid(`role must be one of ${ROLES.join(', ')}`, { field: 'role' });
      if (rule.role && placeholders === 0 && !rule.project) throw invalid('a role rule needs "project", or {project} in its value', { field: 'project' });
      if (rule.project && placeholders) throw invalid('give either "project" or {project} in the value, not both', { field: 'project' });
      if (rule.project && !(await this.access.project(rule.project))) throw new DomainError('NOT_FOUND', `project "${rule.project}" does not exist`);
      if (rule.group && !(await this.access.groupExists(rule.group))) throw new DomainError('NOT_FOUND', `group "${rule.group}" does not exist`);
      return this.access.addRule(rule);
    });
  }

  deleteRule(ctx: RequestContext, id: string): Promise<void> {
    return this.audited(ctx, 'oidc.rule.delete', { target: id }, async () => {
      this.serverAdmin(ctx, 'map OIDC claims');
      if (!(await this.access.deleteRule(id))) throw new DomainError('NOT_FOUND', `claim rule ${id} does not exist`);
    });
  }

  // ---- audit --------------------------------------------------------------------------------

  /** Server admins read everything; project admins read their projects' entries. */
  async audit(ctx: RequestContext, q: AuditQuery): Promise<AuditEntry[]> {
    const p = this.authenticated(ctx);
    if (!p.serverAdmin) {
      if (!q.project) throw forbidden('only server administrators read the whole audit log; project admins add ?project=NAME');
      if (p.roles.get(q.project) !== 'admin') throw forbidden(`reading the audit log of project ${q.project} needs admin there`);
    }
    return this.access.auditLog(q);
  }

  // ---- internals ----------------------------------------------------------------------------

  private authenticated(ctx: RequestContext): Principal {
    if (ctx.principal.kind === 'anonymous') throw needLogin();
    return ctx.principal;
  }

  private serverAdmin(ctx: RequestContext, what: string): void {
    const p = this.authenticated(ctx);
    if (!p.serverAdmin) throw forbidden(`only server administrators ${what}`);
  }

  private async projectAdmin(ctx: RequestContext, project: string, what: string): Promise<void> {
    const p = this.authenticated(ctx);
    if (!(await this.access.project(project))) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
    if (!p.serverAdmin && p.roles.get(project) !== 'admin') throw forbidden(`you may not ${what} project ${project}: this needs admin there (your role: ${p.roles.get(project) ?? 'none'})`);
  }

  private async visibleProject(p: Principal, name: string): Promise<Project> {
    const project = await this.access.project(name);
    if (!project || !(p.serverAdmin || p.roles.has(name))) throw new DomainError('NOT_FOUND', `project "${name}" does not exist (or you are not a member)`, { project: name });
    return project;
  }

  /**
   * Runs a mutating action and records it, allowed or refused. `note(image)` lets the action name
   * the project once it has loaded the target.
   */
  private async audited<T>(
    ctx: RequestContext,
    action: string,
    t: { target?: string; project?: string; detail?: Record<string, unknown> },
    fn: (note: (x: Image | Record<string, unknown>) => void) => Promise<T>,
  ): Promise<T> {
    let project = t.project;
    let detail = t.detail;
    const note = (x: Image | Record<string, unknown>) => {
      if ('visibility' in x && 'state' in x) project ??= (x as Image).project;
      else detail = { ...detail, ...x };
    };
    let result = 'ok';
    try {
      return await fn(note);
    } catch (e) {
      result = e instanceof DomainError ? e.code : 'INTERNAL';
      if (e instanceof DomainError && typeof e.details.project === 'string') project ??= e.details.project;
      throw e;
    } finally {
      await this.access
        .audit({ actor: ctx.principal.label, action, target: t.target, project, remote: ctx.remote, result, detail })
        .catch(() => undefined);
    }
  }
}

function clusterScopeOnly(v: Visibility): void {
  if (!CLUSTER_VISIBILITIES.includes(v)) {
    throw invalid(`visibility "${v}" needs a project to be visible to, and this image has none (cluster scope: server admins only); use "private" or "public", or create the image in a project`, {
      field: 'visibility',
      allowed: CLUSTER_VISIBILITIES,
    });
  }
}

function needLogin(): DomainError {
  return new DomainError('UNAUTHENTICATED', 'authentication required: send "Authorization: Bearer <token>" (create one with "imago token create", or use an OIDC access token)');
}

/** A principal's only project, when it has exactly one (a project token). */
function defaultProject(p: Principal): string | undefined {
  return p.roles.size === 1 ? [...p.roles.keys()][0] : undefined;
}

export function scopeOf(p: Principal): AccessScope {
  const adminProjects: string[] = [];
  const memberProjects: string[] = [];
  for (const [proj, role] of p.roles) (role === 'admin' ? adminProjects : memberProjects).push(proj);
  return { anonymous: p.kind === 'anonymous', user: p.user, adminProjects, memberProjects };
}

/** The one accounting rule, as `imago quota show` prints it. */
export const QUOTA_RULES = [
  'images: every image of the project counts from its creation until it is deleted, whatever its state (pending, error and disabled included).',
  'storedBytes: the stored (unwrapped) size of every image holding data, counted in full for each image — also when other images hold the same bytes (deduplication saves the server\'s disk, not your quota; your figure never changes because of someone else\'s image).',
  'stagingBytes: the announced size of each upload or import running now (Content-Length / X-Image-Size); released when it ends, stored or failed.',
  'imports: URL imports running now.',
  'sharedBytes (shown, not a limit): the stored bytes of this project\'s images that another image you may read also holds — images you cannot read never count, so the figure does not reveal what other projects store.',
  'A failed or refused upload counts nothing once it ends; a deleted image counts nothing from the moment it is deleted; a clone counts in full in the project that owns it.',
  'Checks: image count at create; stagingBytes, storedBytes (stored + staging + announced) and imports before the first byte is accepted; storedBytes again at commit with the actual size (uploads without a size, compressed uploads).',
];

export type { Visibility };
