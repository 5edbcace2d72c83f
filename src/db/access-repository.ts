/**
 * Persistence of the access model on Kysely (SQLite and PostgreSQL alike): the adapter behind the
 * domain's `AccessRepository` port (domain/access/access-repository.ts). No policy here — `domain/access/policy.ts`
 * decides, `domain/access/authorizer.ts` enforces.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { isUniqueViolation as isUnique, type Database } from './database.js';
import type { ProjectsTable, Schema, TokensTable } from './schema.js';
import { maxRole, type Role } from '../domain/access/policy.js';
import {
  PROJECT_NAME,
  type AccessRepository,
  type AuditEntry,
  type AuditQuery,
  type ClaimRule,
  type Grant,
  type OidcIssuer,
  type Project,
  type QuotaLimits,
  type TokenRecord,
} from '../domain/access/access-repository.js';
import { DomainError } from '../domain/errors.js';

export class KyselyAccessRepository implements AccessRepository {
  private readonly db: Kysely<Schema>;
  constructor(database: Database) {
    this.db = database.kysely;
  }

  // ---- projects -----------------------------------------------------------------------------

  async createProject(name: string, description?: string): Promise<Project> {
    if (!PROJECT_NAME.test(name)) {
      throw new DomainError(
        'INVALID_REQUEST',
        `project name "${name.slice(0, 80)}" must be 1–64 lowercase letters, digits, ".", "_" or "-", starting and ending with a letter or digit`,
      );
    }
    try {
      await this.db
        .insertInto('projects')
        .values({
          name,
          description: description ?? null,
          created_at: Date.now(),
          max_images: null,
          max_stored_bytes: null,
          max_staging_bytes: null,
          max_imports: null,
        })
        .execute();
    } catch (e) {
      if (isUnique(e)) throw new DomainError('CONFLICT', `project "${name}" already exists`, { project: name });
      throw e;
    }
    return (await this.project(name))!;
  }

  async project(name: string): Promise<Project | undefined> {
    const r = await this.db.selectFrom('projects').selectAll().where('name', '=', name).executeTakeFirst();
    return r ? projectFromRow(r) : undefined;
  }

  async projects(): Promise<Project[]> {
    return (await this.db.selectFrom('projects').selectAll().orderBy('name').execute()).map(projectFromRow);
  }

  async deleteProject(name: string): Promise<boolean> {
    const r = await this.db.deleteFrom('projects').where('name', '=', name).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async setQuota(name: string, q: { [K in keyof QuotaLimits]?: number | null }): Promise<Project | undefined> {
    const set: Partial<ProjectsTable> = {};
    if (q.images !== undefined) set.max_images = q.images;
    if (q.storedBytes !== undefined) set.max_stored_bytes = q.storedBytes;
    if (q.stagingBytes !== undefined) set.max_staging_bytes = q.stagingBytes;
    if (q.imports !== undefined) set.max_imports = q.imports;
    if (Object.keys(set).length) await this.db.updateTable('projects').set(set).where('name', '=', name).execute();
    return this.project(name);
  }

  // ---- users, groups, grants ------------------------------------------------------------------

  async ensureUser(name: string, serverAdmin = false): Promise<void> {
    try {
      await this.db
        .insertInto('users')
        .values({ name, server_admin: serverAdmin ? 1 : 0, created_at: Date.now() })
        .execute();
    } catch (e) {
      if (!isUnique(e)) throw e;
      if (serverAdmin) await this.db.updateTable('users').set({ server_admin: 1 }).where('name', '=', name).execute();
    }
  }

  async user(name: string): Promise<{ name: string; serverAdmin: boolean; createdAt: Date } | undefined> {
    const r = await this.db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
    return r ? { name: r.name, serverAdmin: Number(r.server_admin) === 1, createdAt: new Date(Number(r.created_at)) } : undefined;
  }

  async users(): Promise<{ name: string; serverAdmin: boolean; createdAt: Date }[]> {
    const rows = await this.db.selectFrom('users').selectAll().orderBy('name').execute();
    return rows.map((r) => ({ name: r.name, serverAdmin: Number(r.server_admin) === 1, createdAt: new Date(Number(r.created_at)) }));
  }

  async deleteUser(name: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('group_members').where('user_name', '=', name).execute();
      await trx.deleteFrom('project_roles').where('subject_kind', '=', 'user').where('subject', '=', name).execute();
      await trx.updateTable('tokens').set({ revoked_at: Date.now() }).where('user_name', '=', name).where('revoked_at', 'is', null).execute();
      const r = await trx.deleteFrom('users').where('name', '=', name).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async createGroup(name: string, description?: string): Promise<void> {
    if (!/^[\w.:@-]{1,255}$/.test(name))
      throw new DomainError('INVALID_REQUEST', `group name "${name.slice(0, 80)}" may hold letters, digits and . _ : @ - (1–255)`);
    try {
      await this.db
        .insertInto('groups')
        .values({ name, description: description ?? null, created_at: Date.now() })
        .execute();
    } catch (e) {
      if (isUnique(e)) throw new DomainError('CONFLICT', `group "${name}" already exists`, { group: name });
      throw e;
    }
  }

  async groups(): Promise<{ name: string; description?: string; members: string[] }[]> {
    const gs = await this.db.selectFrom('groups').selectAll().orderBy('name').execute();
    const ms = await this.db.selectFrom('group_members').selectAll().execute();
    return gs.map((g) => ({
      name: g.name,
      description: g.description ?? undefined,
      members: ms
        .filter((m) => m.group_name === g.name)
        .map((m) => m.user_name)
        .sort(),
    }));
  }

  async groupExists(name: string): Promise<boolean> {
    return (await this.db.selectFrom('groups').select('name').where('name', '=', name).executeTakeFirst()) !== undefined;
  }

  async deleteGroup(name: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('project_roles').where('subject_kind', '=', 'group').where('subject', '=', name).execute();
      await trx.deleteFrom('group_members').where('group_name', '=', name).execute();
      const r = await trx.deleteFrom('groups').where('name', '=', name).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async addGroupMember(group: string, user: string): Promise<void> {
    try {
      await this.db.insertInto('group_members').values({ group_name: group, user_name: user }).execute();
    } catch (e) {
      if (!isUnique(e)) throw e;
    }
  }

  async removeGroupMember(group: string, user: string): Promise<boolean> {
    const r = await this.db.deleteFrom('group_members').where('group_name', '=', group).where('user_name', '=', user).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async grant(g: Grant): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx
        .deleteFrom('project_roles')
        .where('project', '=', g.project)
        .where('subject_kind', '=', g.subjectKind)
        .where('subject', '=', g.subject)
        .execute();
      await trx.insertInto('project_roles').values({ project: g.project, subject_kind: g.subjectKind, subject: g.subject, role: g.role }).execute();
    });
  }

  async revokeGrant(project: string, subjectKind: 'user' | 'group', subject: string): Promise<boolean> {
    const r = await this.db
      .deleteFrom('project_roles')
      .where('project', '=', project)
      .where('subject_kind', '=', subjectKind)
      .where('subject', '=', subject)
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async grants(project?: string): Promise<Grant[]> {
    let q = this.db.selectFrom('project_roles').selectAll();
    if (project) q = q.where('project', '=', project);
    const rows = await q.orderBy('project').orderBy('subject_kind').orderBy('subject').execute();
    return rows.map((r) => ({ project: r.project, subjectKind: r.subject_kind, subject: r.subject, role: r.role }));
  }

  /** A user's roles from direct grants and from the groups it is in (static and `extraGroups`). */
  async rolesOf(user: string, extraGroups: readonly string[] = []): Promise<Map<string, Role>> {
    const stat = await this.db.selectFrom('group_members').select('group_name').where('user_name', '=', user).execute();
    const groups = [...new Set([...stat.map((r) => r.group_name), ...extraGroups])];
    let q = this.db
      .selectFrom('project_roles')
      .selectAll()
      .where((eb) => eb.and([eb('subject_kind', '=', 'user'), eb('subject', '=', user)]));
    if (groups.length) {
      q = this.db
        .selectFrom('project_roles')
        .selectAll()
        .where((eb) =>
          eb.or([eb.and([eb('subject_kind', '=', 'user'), eb('subject', '=', user)]), eb.and([eb('subject_kind', '=', 'group'), eb('subject', 'in', groups)])]),
        );
    }
    const roles = new Map<string, Role>();
    for (const r of await q.execute()) roles.set(r.project, maxRole(roles.get(r.project), r.role));
    return roles;
  }

  // ---- tokens -------------------------------------------------------------------------------

  async insertToken(t: TokenRecord): Promise<void> {
    await this.db
      .insertInto('tokens')
      .values({
        id: t.id,
        name: t.name,
        user_name: t.user,
        project: t.project ?? null,
        role: t.role,
        secret_hash: t.secretHash,
        created_at: t.createdAt.getTime(),
        created_by: t.createdBy,
        expires_at: t.expiresAt?.getTime() ?? null,
        revoked_at: null,
        last_used_at: null,
      })
      .execute();
  }

  async token(id: string): Promise<TokenRecord | undefined> {
    const r = await this.db.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? tokenFromRow(r) : undefined;
  }

  async tokens(filter: { user?: string; project?: string; includeRevoked?: boolean } = {}): Promise<TokenRecord[]> {
    let q = this.db.selectFrom('tokens').selectAll();
    if (filter.user) q = q.where('user_name', '=', filter.user);
    if (filter.project) q = q.where('project', '=', filter.project);
    if (!filter.includeRevoked) q = q.where('revoked_at', 'is', null);
    return (await q.orderBy('created_at').orderBy('id').execute()).map(tokenFromRow);
  }

  async revokeToken(id: string): Promise<boolean> {
    const r = await this.db.updateTable('tokens').set({ revoked_at: Date.now() }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async touchToken(id: string, at: number): Promise<void> {
    await this.db.updateTable('tokens').set({ last_used_at: at }).where('id', '=', id).execute();
  }

  // ---- OIDC ---------------------------------------------------------------------------------

  async putIssuer(i: OidcIssuer): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('oidc_issuers').where('issuer', '=', i.issuer).execute();
      await trx
        .insertInto('oidc_issuers')
        .values({ issuer: i.issuer, audience: i.audience, jwks_url: i.jwksUrl ?? null, username_claim: i.usernameClaim, created_at: Date.now() })
        .execute();
    });
  }

  async issuers(): Promise<OidcIssuer[]> {
    const rows = await this.db.selectFrom('oidc_issuers').selectAll().orderBy('issuer').execute();
    return rows.map((r) => ({ issuer: r.issuer, audience: r.audience, jwksUrl: r.jwks_url ?? undefined, usernameClaim: r.username_claim }));
  }

  async deleteIssuer(issuer: string): Promise<boolean> {
    const r = await this.db.deleteFrom('oidc_issuers').where('issuer', '=', issuer).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async addRule(rule: Omit<ClaimRule, 'id'>): Promise<ClaimRule> {
    const id = randomUUID();
    await this.db
      .insertInto('claim_rules')
      .values({
        id,
        issuer: rule.issuer ?? null,
        claim: rule.claim,
        value: rule.value,
        project: rule.project ?? null,
        role: rule.role ?? null,
        group_name: rule.group ?? null,
        created_at: Date.now(),
      })
      .execute();
    return { id, ...rule };
  }

  async rules(): Promise<ClaimRule[]> {
    const rows = await this.db.selectFrom('claim_rules').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map((r) => {
      const rule: ClaimRule = { id: r.id, claim: r.claim, value: r.value };
      if (r.issuer !== null) rule.issuer = r.issuer;
      if (r.project !== null) rule.project = r.project;
      if (r.role !== null) rule.role = r.role;
      if (r.group_name !== null) rule.group = r.group_name;
      return rule;
    });
  }

  async deleteRule(id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('claim_rules').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  // ---- audit --------------------------------------------------------------------------------

  async audit(e: Omit<AuditEntry, 'id' | 'at'> & { at?: Date }): Promise<void> {
    await this.db
      .insertInto('audit_log')
      .values({
        id: randomUUID(),
        at: (e.at ?? new Date()).getTime(),
        actor: e.actor.slice(0, 512),
        action: e.action,
        target: e.target ?? null,
        project: e.project ?? null,
        remote: e.remote ?? null,
        result: e.result,
        detail: e.detail ? JSON.stringify(e.detail) : null,
      })
      .execute();
  }

  async auditLog(q: AuditQuery): Promise<AuditEntry[]> {
    let s = this.db.selectFrom('audit_log').selectAll();
    if (q.actor) s = s.where('actor', 'like', `%${q.actor.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    if (q.action) s = s.where('action', '=', q.action);
    if (q.project) s = s.where('project', '=', q.project);
    if (q.target) s = s.where('target', '=', q.target);
    if (q.since) s = s.where('at', '>=', q.since.getTime());
    if (q.before) {
      const b = q.before;
      s = s.where(sql<boolean>`(at < ${b.at} or (at = ${b.at} and id < ${b.id}))`);
    }
    const rows = await s.orderBy('at', 'desc').orderBy('id', 'desc').limit(q.limit).execute();
    return rows.map((r) => {
      const e: AuditEntry = { id: r.id, at: new Date(Number(r.at)), actor: r.actor, action: r.action, result: r.result };
      if (r.target !== null) e.target = r.target;
      if (r.project !== null) e.project = r.project;
      if (r.remote !== null) e.remote = r.remote;
      if (r.detail !== null) e.detail = JSON.parse(r.detail) as Record<string, unknown>;
      return e;
    });
  }
}

function projectFromRow(r: ProjectsTable): Project {
  const quota: QuotaLimits = {};
  if (r.max_images !== null) quota.images = Number(r.max_images);
  if (r.max_stored_bytes !== null) quota.storedBytes = Number(r.max_stored_bytes);
  if (r.max_staging_bytes !== null) quota.stagingBytes = Number(r.max_staging_bytes);
  if (r.max_imports !== null) quota.imports = Number(r.max_imports);
  const p: Project = { name: r.name, createdAt: new Date(Number(r.created_at)), quota };
  if (r.description !== null) p.description = r.description;
  return p;
}

function tokenFromRow(r: TokensTable): TokenRecord {
  const t: TokenRecord = {
    id: r.id,
    name: r.name,
    user: r.user_name,
    role: r.role,
    createdAt: new Date(Number(r.created_at)),
    createdBy: r.created_by,
    secretHash: r.secret_hash,
  };
  if (r.project !== null) t.project = r.project;
  if (r.expires_at !== null) t.expiresAt = new Date(Number(r.expires_at));
  if (r.revoked_at !== null) t.revokedAt = new Date(Number(r.revoked_at));
  if (r.last_used_at !== null) t.lastUsedAt = new Date(Number(r.last_used_at));
  return t;
}
