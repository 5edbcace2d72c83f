/**
 * Project administration: projects, the roles users and groups hold in them (grants), their
 * quotas and their convert-on-import policy. Every mutation is audited.
 */
import type { AccessRepository, Grant, Project, QuotaLimits } from './access-repository.js';
import { DomainError, invalid } from '../errors.js';
import { CONVERT_FORMATS, type ProjectUsage } from '../images/image.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import type { AuditLog } from './audit-log.js';
import { scopeOf, type Authorizer, type RequestContext } from './authorizer.js';
import { ROLES, type Role } from './policy.js';

/** The one accounting rule, as `imago quota show` prints it. */
const QUOTA_RULES = [
  'images: every image of the project counts from its creation until it is deleted, whatever its state (pending, error and disabled included).',
  "storedBytes: the stored (unwrapped) size of every image holding data, counted in full for each image — also when other images hold the same bytes (deduplication saves the server's disk, not your quota; your figure never changes because of someone else's image).",
  "storedBytes, OCI: the project's repositories' distinct blobs and manifests that no image of the project holds, and what open upload sessions received (a blob in several repositories counts once; a pushed layer that became an image counts once, as the image).",
  'stagingBytes: the announced size of each upload or import running now (Content-Length / X-Image-Size); released when it ends, stored or failed.',
  'imports: URL imports running now.',
  "sharedBytes (shown, not a limit): the stored bytes of this project's images that another image you may read also holds — images you cannot read never count, so the figure does not reveal what other projects store.",
  'A failed or refused upload counts nothing once it ends; a deleted image counts nothing from the moment it is deleted; a clone counts in full in the project that owns it.',
  'Checks: image count at create; stagingBytes, storedBytes (stored + staging + announced) and imports before the first byte is accepted; storedBytes again at commit with the actual size (uploads without a size, compressed uploads).',
];

export class ProjectAdmin {
  constructor(
    private readonly images: ImageCatalog,
    private readonly access: AccessRepository,
    private readonly authz: Authorizer,
    private readonly audit: AuditLog,
  ) {}

  createProject(ctx: RequestContext, name: string, description?: string): Promise<Project> {
    return this.audit.record(ctx, 'project.create', { target: name, project: name }, async () => {
      this.authz.serverAdmin(ctx, 'create projects');
      return this.access.createProject(name, description);
    });
  }

  async listProjects(ctx: RequestContext): Promise<(Project & { role?: Role })[]> {
    const p = this.authz.authenticated(ctx);
    const all = await this.access.projects();
    if (p.serverAdmin) return all.map((x) => ({ ...x, role: p.roles.get(x.name) }));
    return all.filter((x) => p.roles.has(x.name)).map((x) => ({ ...x, role: p.roles.get(x.name) }));
  }

  async showProject(ctx: RequestContext, name: string): Promise<{ project: Project; grants?: Grant[]; usage: ProjectUsage }> {
    const p = this.authz.authenticated(ctx);
    const project = await this.authz.visibleProject(p, name);
    const grants = p.serverAdmin || p.roles.get(name) === 'admin' ? await this.access.grants(name) : undefined;
    return { project, grants, usage: await this.images.repo.usage(name, p.serverAdmin ? undefined : scopeOf(p)) };
  }

  deleteProject(ctx: RequestContext, name: string): Promise<void> {
    return this.audit.record(ctx, 'project.delete', { target: name, project: name }, async () => {
      this.authz.serverAdmin(ctx, 'delete projects');
      const used = await this.images.repo.usage(name);
      if (used.images > 0)
        throw new DomainError('CONFLICT', `project ${name} still owns ${used.images} image(s); delete them first`, { project: name, images: used.images });
      // what is left is its OCI repositories' blobs, manifests and open uploads
      if (used.storedBytes > 0)
        throw new DomainError(
          'CONFLICT',
          `project ${name} still holds ${used.storedBytes} bytes in its OCI repositories (blobs, manifests, open uploads); delete them first (DELETE /v2/${name}/<repo>/manifests/<digest>, /blobs/<digest>)`,
          { project: name, storedBytes: used.storedBytes },
        );
      if (!(await this.access.deleteProject(name))) throw new DomainError('NOT_FOUND', `project "${name}" does not exist`, { project: name });
    });
  }

  grant(ctx: RequestContext, g: Grant): Promise<Grant> {
    return this.audit.record(ctx, 'project.grant', { target: `${g.subjectKind}:${g.subject}`, project: g.project, detail: { role: g.role } }, async () => {
      await this.authz.projectAdmin(ctx, g.project, 'grant roles in');
      if (!(ROLES as readonly string[]).includes(g.role)) throw invalid(`role must be one of ${ROLES.join(', ')}`, { field: 'role' });
      if (g.subjectKind === 'group' && !(await this.access.groupExists(g.subject)))
        throw new DomainError('NOT_FOUND', `group "${g.subject}" does not exist; create it with "imago group create ${g.subject}"`);
      if (g.subjectKind === 'user') await this.access.ensureUser(g.subject);
      await this.access.grant(g);
      return g;
    });
  }

  revokeGrant(ctx: RequestContext, project: string, kind: 'user' | 'group', subject: string): Promise<void> {
    return this.audit.record(ctx, 'project.revoke', { target: `${kind}:${subject}`, project }, async () => {
      await this.authz.projectAdmin(ctx, project, 'revoke roles in');
      if (!(await this.access.revokeGrant(project, kind, subject))) throw new DomainError('NOT_FOUND', `${kind} ${subject} has no role in project ${project}`);
    });
  }

  async quota(ctx: RequestContext, project: string): Promise<{ project: string; limits: QuotaLimits; usage: ProjectUsage; rules: string[] }> {
    const p = this.authz.authenticated(ctx);
    const proj = await this.authz.visibleProject(p, project);
    return { project, limits: proj.quota, usage: await this.images.repo.usage(project, p.serverAdmin ? undefined : scopeOf(p)), rules: QUOTA_RULES };
  }

  /**
   * The project's convert-on-import target (server admins): a format, 'none' (keep images as
   * uploaded even when the server converts), or null (the server's setting applies).
   */
  setProjectConvertTo(ctx: RequestContext, project: string, convertTo: string | null): Promise<{ project: string; convertTo: string | null }> {
    return this.audit.record(ctx, 'project.convert-to', { target: project, project, detail: { convertTo } }, async () => {
      this.authz.serverAdmin(ctx, "set a project's conversion policy");
      if (convertTo !== null && convertTo !== 'none' && !(CONVERT_FORMATS as readonly string[]).includes(convertTo)) {
        throw invalid(`convertTo must be one of ${CONVERT_FORMATS.join(', ')}, "none" (keep as uploaded) or null (the server's setting)`, {
          field: 'convertTo',
        });
      }
      if (!(await this.images.repo.setProjectConvertTo(project, convertTo)))
        throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
      return { project, convertTo };
    });
  }

  async projectConvertTo(ctx: RequestContext, project: string): Promise<string | null> {
    await this.authz.visibleProject(this.authz.authenticated(ctx), project);
    return (await this.images.repo.projectConvertTo(project)) ?? null;
  }

  setQuota(ctx: RequestContext, project: string, limits: { [K in keyof QuotaLimits]?: number | null }): Promise<Project> {
    return this.audit.record(ctx, 'quota.set', { target: project, project, detail: limits }, async () => {
      this.authz.serverAdmin(ctx, 'set quotas');
      for (const [k, v] of Object.entries(limits)) {
        if (v !== null && v !== undefined && (!Number.isSafeInteger(v) || v < 0))
          throw invalid(`quota ${k} must be a whole number ≥ 0, or null for unlimited`, { field: k });
      }
      const p = await this.access.setQuota(project, limits);
      if (!p) throw new DomainError('NOT_FOUND', `project "${project}" does not exist`, { project });
      return p;
    });
  }
}
