/**
 * Identity administration: who a principal can be. Users and groups (server admins), API tokens
 * (nobody mints more than they have), and the OIDC issuers and claim rules that turn a foreign
 * identity into roles. Every mutation is audited.
 */
import type { AccessRepository, ClaimRule, Grant, OidcIssuer, TokenRecord } from './access-repository.js';
import { DomainError, forbidden, invalid } from '../errors.js';
import type { AuditLog } from './audit-log.js';
import { mintToken, type Authenticator } from './authenticator.js';
import type { Authorizer, RequestContext } from './authorizer.js';
import { defaultProject, roleAtLeast, ROLES, type Principal, type Role } from './policy.js';

export class IdentityAdmin {
  constructor(
    private readonly access: AccessRepository,
    private readonly auth: Authenticator,
    private readonly authz: Authorizer,
    private readonly audit: AuditLog,
  ) {}

  // ---- users and groups (server admins) -----------------------------------------------------

  createUser(ctx: RequestContext, name: string, serverAdmin: boolean): Promise<void> {
    return this.audit.record(ctx, 'user.create', { target: name, detail: { serverAdmin } }, async () => {
      this.authz.serverAdmin(ctx, 'create users');
      if (!/^[\w.@:+-]{1,255}$/.test(name)) throw invalid(`user name "${name.slice(0, 80)}" may hold letters, digits and . _ @ : + - (1–255)`);
      if (await this.access.user(name)) throw new DomainError('CONFLICT', `user "${name}" already exists`);
      await this.access.ensureUser(name, serverAdmin);
    });
  }

  async listUsers(ctx: RequestContext): Promise<{ name: string; serverAdmin: boolean; createdAt: Date; grants: Grant[] }[]> {
    this.authz.serverAdmin(ctx, 'list users');
    const grants = await this.access.grants();
    return (await this.access.users()).map((u) => ({ ...u, grants: grants.filter((g) => g.subjectKind === 'user' && g.subject === u.name) }));
  }

  deleteUser(ctx: RequestContext, name: string): Promise<void> {
    return this.audit.record(ctx, 'user.delete', { target: name }, async () => {
      this.authz.serverAdmin(ctx, 'delete users');
      if (name === ctx.principal.user) throw invalid('you cannot delete yourself');
      if (!(await this.access.deleteUser(name))) throw new DomainError('NOT_FOUND', `user "${name}" does not exist`);
    });
  }

  createGroup(ctx: RequestContext, name: string, description?: string): Promise<void> {
    return this.audit.record(ctx, 'group.create', { target: name }, async () => {
      this.authz.serverAdmin(ctx, 'create groups');
      await this.access.createGroup(name, description);
    });
  }

  async listGroups(ctx: RequestContext): Promise<{ name: string; description?: string; members: string[] }[]> {
    this.authz.serverAdmin(ctx, 'list groups');
    return this.access.groups();
  }

  deleteGroup(ctx: RequestContext, name: string): Promise<void> {
    return this.audit.record(ctx, 'group.delete', { target: name }, async () => {
      this.authz.serverAdmin(ctx, 'delete groups');
      if (!(await this.access.deleteGroup(name))) throw new DomainError('NOT_FOUND', `group "${name}" does not exist`);
    });
  }

  groupMember(ctx: RequestContext, group: string, user: string, add: boolean): Promise<void> {
    return this.audit.record(ctx, add ? 'group.member.add' : 'group.member.remove', { target: group, detail: { user } }, async () => {
      this.authz.serverAdmin(ctx, 'change group members');
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
  createToken(
    ctx: RequestContext,
    req: { name: string; project?: string; role: Role | 'server-admin'; expiresAt?: Date; user?: string },
  ): Promise<{ record: TokenRecord; token: string }> {
    return this.audit.record(ctx, 'token.create', { target: req.name, project: req.project, detail: { role: req.role, user: req.user } }, async (note) => {
      const p = this.authz.authenticated(ctx);
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
      if (user !== p.user && !p.serverAdmin && !(project && p.roles.get(project) === 'admin'))
        throw forbidden('only project or server administrators create tokens for another user');
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
    const p = this.authz.authenticated(ctx);
    const all = await this.access.tokens({ project: filter.project, includeRevoked: filter.includeRevoked });
    return all.filter((t) => mayManageToken(p, t));
  }

  revokeToken(ctx: RequestContext, id: string): Promise<void> {
    return this.audit.record(ctx, 'token.revoke', { target: id }, async () => {
      const p = this.authz.authenticated(ctx);
      const t = await this.access.token(id);
      if (!t || !mayManageToken(p, t)) throw new DomainError('NOT_FOUND', `token ${id} does not exist (or is not yours to see)`, { id });
      if (!(await this.access.revokeToken(id))) throw new DomainError('CONFLICT', `token ${id} was already revoked`, { id });
    });
  }

  // ---- OIDC ---------------------------------------------------------------------------------

  putIssuer(ctx: RequestContext, i: OidcIssuer): Promise<OidcIssuer> {
    return this.audit.record(ctx, 'oidc.issuer.put', { target: i.issuer }, async () => {
      this.authz.serverAdmin(ctx, 'configure OIDC issuers');
      let u: URL;
      try {
        u = new URL(i.issuer);
      } catch {
        throw invalid(`issuer "${i.issuer.slice(0, 200)}" is not a URL`, { field: 'issuer' });
      }
      if (u.protocol !== 'https:' && !(u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)))
        throw invalid('issuer must be an https URL', { field: 'issuer' });
      if (!i.audience) throw invalid("audience is required: the client id Imago's tokens are issued for", { field: 'audience' });
      await this.access.putIssuer(i);
      this.auth.forgetIssuer(i.issuer);
      return i;
    });
  }

  async listIssuers(ctx: RequestContext): Promise<{ issuers: OidcIssuer[]; rules: ClaimRule[] }> {
    this.authz.serverAdmin(ctx, 'list OIDC settings');
    return { issuers: await this.access.issuers(), rules: await this.access.rules() };
  }

  deleteIssuer(ctx: RequestContext, issuer: string): Promise<void> {
    return this.audit.record(ctx, 'oidc.issuer.delete', { target: issuer }, async () => {
      this.authz.serverAdmin(ctx, 'configure OIDC issuers');
      if (!(await this.access.deleteIssuer(issuer))) throw new DomainError('NOT_FOUND', `issuer ${issuer} is not configured`);
      this.auth.forgetIssuer(issuer);
    });
  }

  addRule(ctx: RequestContext, rule: Omit<ClaimRule, 'id'>): Promise<ClaimRule> {
    return this.audit.record(
      ctx,
      'oidc.rule.add',
      { target: `${rule.claim}=${rule.value}`, project: rule.project, detail: { role: rule.role, group: rule.group } },
      async () => {
        this.authz.serverAdmin(ctx, 'map OIDC claims');
        const placeholders = rule.value.split('{project}').length - 1;
        if (placeholders > 1) throw invalid('a rule value holds at most one {project}', { field: 'value' });
        if (!rule.role && !rule.group) throw invalid('a rule grants a role (with a project or {project}) or a group membership', { field: 'role' });
        if (rule.role && !(ROLES as readonly string[]).includes(rule.role)) throw invalid(`role must be one of ${ROLES.join(', ')}`, { field: 'role' });
        if (rule.role && placeholders === 0 && !rule.project) throw invalid('a role rule needs "project", or {project} in its value', { field: 'project' });
        if (rule.project && placeholders) throw invalid('give either "project" or {project} in the value, not both', { field: 'project' });
        if (rule.project && !(await this.access.project(rule.project))) throw new DomainError('NOT_FOUND', `project "${rule.project}" does not exist`);
        if (rule.group && !(await this.access.groupExists(rule.group))) throw new DomainError('NOT_FOUND', `group "${rule.group}" does not exist`);
        return this.access.addRule(rule);
      },
    );
  }

  deleteRule(ctx: RequestContext, id: string): Promise<void> {
    return this.audit.record(ctx, 'oidc.rule.delete', { target: id }, async () => {
      this.authz.serverAdmin(ctx, 'map OIDC claims');
      if (!(await this.access.deleteRule(id))) throw new DomainError('NOT_FOUND', `claim rule ${id} does not exist`);
    });
  }
}

/** A token is yours to list and revoke when it acts for you, or you administer its project (or the server). */
function mayManageToken(p: Principal, t: TokenRecord): boolean {
  return p.serverAdmin || (p.user !== undefined && t.user === p.user) || (t.project !== undefined && p.roles.get(t.project) === 'admin');
}
