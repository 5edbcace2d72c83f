/**
 * REST routes of the access model: projects and their grants and quotas, users, groups, API
 * tokens, image members and permissions, OIDC issuers and claim rules, the audit log, whoami.
 * Handlers only shape requests and replies; the services of domain/access/ decide.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MEMBER_STATUSES, ROLES } from '../../domain/access/policy.js';
import type { AuditLog } from '../../domain/access/audit-log.js';
import type { IdentityAdmin } from '../../domain/access/identity-admin.js';
import type { ImageAccess } from '../../domain/access/image-access.js';
import type { ImageSharing } from '../../domain/access/image-sharing.js';
import type { ProjectAdmin } from '../../domain/access/project-admin.js';
import type { AuditEntry, Project, TokenRecord } from '../../domain/access/access-repository.js';
import { DomainError, invalid } from '../../domain/errors.js';
import type { ImageMember } from '../../domain/images/image.js';
import { ctxOf } from '../http/principal.js';
import { imageJson } from './image-json.js';
import { IdParams, nullableInteger, nullableString, stringEnum } from './request-schemas.js';

const s = Type.String();
const opt = Type.Optional;
const NameParams = Type.Object({ name: Type.String({ maxLength: 255 }) });
const StringIdParams = Type.Object({ id: s });

export interface AccessRoutesOptions {
  projects: ProjectAdmin;
  identity: IdentityAdmin;
  sharing: ImageSharing;
  /** chmod */
  imageAccess: ImageAccess;
  audit: AuditLog;
}

export const accessRoutes: FastifyPluginAsyncTypebox<AccessRoutesOptions> = async (app, { projects, identity, sharing, imageAccess, audit }) => {
  app.get('/whoami', { schema: { summary: 'Who the credentials say you are', tags: ['access'] } }, async (req) => {
    const p = req.principal;
    return { kind: p.kind, user: p.user, serverAdmin: p.serverAdmin, roles: Object.fromEntries(p.roles), token: p.tokenId };
  });

  // ---- projects -----------------------------------------------------------------------------
  app.post(
    '/projects',
    { schema: { summary: 'Create a project (server admins)', tags: ['access'], body: Type.Object({ name: s, description: opt(s) }) } },
    async (req, reply) => {
      const b = req.body;
      const p = await projects.createProject(ctxOf(req), b.name, b.description);
      return reply.code(201).header('location', `/api/v1/projects/${p.name}`).send(projectJson(p));
    },
  );
  app.get('/projects', { schema: { summary: 'Projects you are in (all, for server admins)', tags: ['access'] } }, async (req) => ({
    projects: (await projects.listProjects(ctxOf(req))).map((p) => ({ ...projectJson(p), role: p.role })),
  }));
  app.get(
    '/projects/:name',
    { schema: { summary: 'Show a project, its grants (admins), usage and convert-on-import target', tags: ['access'], params: NameParams } },
    async (req) => {
      const ctx = ctxOf(req);
      const r = await projects.showProject(ctx, req.params.name);
      return { ...projectJson(r.project), grants: r.grants, usage: r.usage, convertTo: await projects.projectConvertTo(ctx, req.params.name) };
    },
  );
  app.delete(
    '/projects/:name',
    { schema: { summary: 'Delete an empty project (server admins)', tags: ['access'], params: NameParams } },
    async (req, reply) => {
      await projects.deleteProject(ctxOf(req), req.params.name);
      return reply.code(204).send();
    },
  );
  app.put(
    '/projects/:name/grants',
    {
      schema: {
        summary: 'Give a user or group a role in the project (project or server admins)',
        tags: ['access'],
        params: NameParams,
        body: Type.Object({ user: opt(s), group: opt(s), role: stringEnum(ROLES) }),
      },
    },
    async (req) => {
      const b = req.body;
      if ((b.user === undefined) === (b.group === undefined)) throw invalid('give exactly one of "user" or "group"');
      return projects.grant(ctxOf(req), {
        project: req.params.name,
        subjectKind: b.user !== undefined ? 'user' : 'group',
        subject: (b.user ?? b.group)!,
        role: b.role,
      });
    },
  );
  app.delete(
    '/projects/:name/grants/:kind/:subject',
    {
      schema: {
        summary: "Remove a user's or group's role",
        tags: ['access'],
        params: Type.Object({ name: s, kind: stringEnum(['user', 'group']), subject: s }),
      },
    },
    async (req, reply) => {
      const p = req.params;
      await projects.revokeGrant(ctxOf(req), p.name, p.kind, p.subject);
      return reply.code(204).send();
    },
  );
  app.patch(
    '/projects/:name',
    {
      schema: {
        summary: 'Set the project\'s convert-on-import target (server admins): a format, "none" (keep as uploaded) or null (the server\'s IMAGO_CONVERT_TO)',
        tags: ['access'],
        params: NameParams,
        body: Type.Object({ convertTo: nullableString({ maxLength: 16 }) }, { additionalProperties: false }),
      },
    },
    async (req) => projects.setProjectConvertTo(ctxOf(req), req.params.name, req.body.convertTo),
  );
  app.get('/projects/:name/quota', { schema: { summary: 'Quota limits, usage and what counts', tags: ['access'], params: NameParams } }, async (req) =>
    projects.quota(ctxOf(req), req.params.name),
  );
  const limit = opt(nullableInteger({ minimum: 0 }));
  app.put(
    '/projects/:name/quota',
    {
      schema: {
        summary: 'Set quota limits (server admins); null = unlimited',
        tags: ['access'],
        params: NameParams,
        body: Type.Object({ images: limit, storedBytes: limit, stagingBytes: limit, imports: limit }, { additionalProperties: false }),
      },
    },
    async (req) => projectJson(await projects.setQuota(ctxOf(req), req.params.name, req.body)),
  );

  // ---- users and groups ---------------------------------------------------------------------
  app.post(
    '/users',
    { schema: { summary: 'Create a user (server admins)', tags: ['access'], body: Type.Object({ name: s, serverAdmin: opt(Type.Boolean()) }) } },
    async (req, reply) => {
      const b = req.body;
      await identity.createUser(ctxOf(req), b.name, b.serverAdmin ?? false);
      return reply.code(201).send({ name: b.name, serverAdmin: b.serverAdmin ?? false });
    },
  );
  app.get('/users', { schema: { summary: 'Users and their roles (server admins)', tags: ['access'] } }, async (req) => ({
    users: (await identity.listUsers(ctxOf(req))).map((u) => ({ ...u, createdAt: u.createdAt.toISOString() })),
  }));
  app.delete('/users/:name', { schema: { summary: 'Delete a user; its tokens are revoked', tags: ['access'], params: NameParams } }, async (req, reply) => {
    await identity.deleteUser(ctxOf(req), req.params.name);
    return reply.code(204).send();
  });
  app.post(
    '/groups',
    { schema: { summary: 'Create a group (a VO) (server admins)', tags: ['access'], body: Type.Object({ name: s, description: opt(s) }) } },
    async (req, reply) => {
      const b = req.body;
      await identity.createGroup(ctxOf(req), b.name, b.description);
      return reply.code(201).send({ name: b.name });
    },
  );
  app.get('/groups', { schema: { summary: 'Groups and members (server admins)', tags: ['access'] } }, async (req) => ({
    groups: await identity.listGroups(ctxOf(req)),
  }));
  app.delete('/groups/:name', { schema: { summary: 'Delete a group', tags: ['access'], params: NameParams } }, async (req, reply) => {
    await identity.deleteGroup(ctxOf(req), req.params.name);
    return reply.code(204).send();
  });
  for (const [method, add] of [
    ['put', true],
    ['delete', false],
  ] as const) {
    app[method](
      '/groups/:name/members/:user',
      { schema: { summary: add ? 'Add a user to a group' : 'Remove a user from a group', tags: ['access'], params: Type.Object({ name: s, user: s }) } },
      async (req, reply) => {
        const p = req.params;
        await identity.groupMember(ctxOf(req), p.name, p.user, add);
        return reply.code(204).send();
      },
    );
  }

  // ---- tokens -------------------------------------------------------------------------------
  app.post(
    '/tokens',
    {
      schema: {
        summary: 'Create an API token; the secret is in this answer only',
        tags: ['access'],
        body: Type.Object({
          name: s,
          project: opt(s),
          role: stringEnum([...ROLES, 'server-admin']),
          expiresAt: opt(Type.String({ format: 'date-time' })),
          user: opt(s),
        }),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const expiresAt = b.expiresAt === undefined ? undefined : new Date(b.expiresAt);
      if (expiresAt && Number.isNaN(expiresAt.getTime())) throw invalid('expiresAt must be an ISO 8601 date-time', { field: 'expiresAt' });
      const r = await identity.createToken(ctxOf(req), { name: b.name, project: b.project, role: b.role, expiresAt, user: b.user });
      return reply.code(201).send({ ...tokenJson(r.record), token: r.token });
    },
  );
  app.get(
    '/tokens',
    {
      schema: {
        summary: 'Tokens you may manage (never their secrets)',
        tags: ['access'],
        querystring: Type.Object({ project: opt(s), revoked: opt(Type.Boolean()) }),
      },
    },
    async (req) => {
      const q = req.query;
      return { tokens: (await identity.listTokens(ctxOf(req), { project: q.project, includeRevoked: q.revoked })).map(tokenJson) };
    },
  );
  app.delete('/tokens/:id', { schema: { summary: 'Revoke a token', tags: ['access'], params: StringIdParams } }, async (req, reply) => {
    await identity.revokeToken(ctxOf(req), req.params.id);
    return reply.code(204).send();
  });

  // ---- image members and permissions --------------------------------------------------------
  const MemberParams = Type.Object({ id: Type.String({ maxLength: 64 }), project: s });
  app.get('/images/:id/members', { schema: { summary: 'Projects the image is shared with', tags: ['sharing'], params: IdParams } }, async (req) => ({
    members: (await sharing.members(ctxOf(req), req.params.id)).map(memberJson),
  }));
  app.post(
    '/images/:id/members',
    { schema: { summary: 'Share with a project (status pending until it accepts)', tags: ['sharing'], params: IdParams, body: Type.Object({ project: s }) } },
    async (req, reply) => reply.code(201).send(memberJson(await sharing.addMember(ctxOf(req), req.params.id, req.body.project))),
  );
  app.put(
    '/images/:id/members/:project',
    {
      schema: {
        summary: "The member project's answer: accepted or rejected",
        tags: ['sharing'],
        params: MemberParams,
        body: Type.Object({ status: stringEnum(MEMBER_STATUSES) }),
      },
    },
    async (req) => {
      const p = req.params;
      return memberJson(await sharing.setMemberStatus(ctxOf(req), p.id, p.project, req.body.status));
    },
  );
  app.delete(
    '/images/:id/members/:project',
    { schema: { summary: 'Stop sharing with a project', tags: ['sharing'], params: MemberParams } },
    async (req, reply) => {
      const p = req.params;
      await sharing.removeMember(ctxOf(req), p.id, p.project);
      return reply.code(204).send();
    },
  );
  app.put(
    '/images/:id/permissions',
    {
      schema: {
        summary: 'chmod: OpenNebula-style owner/group/other × use/manage/admin bits, e.g. {"mode":"640"}',
        tags: ['sharing'],
        params: IdParams,
        body: Type.Object({ mode: Type.String({ pattern: '^[0-7]{3}$' }) }),
      },
    },
    async (req) => imageJson(await imageAccess.chmod(ctxOf(req), req.params.id, req.body.mode)),
  );

  // ---- OIDC ---------------------------------------------------------------------------------
  app.get('/oidc', { schema: { summary: 'Trusted OIDC issuers and claim rules (server admins)', tags: ['access'] } }, async (req) =>
    identity.listIssuers(ctxOf(req)),
  );
  app.put(
    '/oidc/issuers',
    {
      schema: {
        summary: 'Trust an OIDC issuer (server admins)',
        tags: ['access'],
        body: Type.Object({ issuer: s, audience: s, jwksUrl: opt(s), usernameClaim: opt(s) }),
      },
    },
    async (req) => {
      const b = req.body;
      return identity.putIssuer(ctxOf(req), { issuer: b.issuer, audience: b.audience, jwksUrl: b.jwksUrl, usernameClaim: b.usernameClaim ?? 'sub' });
    },
  );
  app.delete(
    '/oidc/issuers',
    { schema: { summary: 'Stop trusting an issuer', tags: ['access'], querystring: Type.Object({ issuer: s }) } },
    async (req, reply) => {
      await identity.deleteIssuer(ctxOf(req), req.query.issuer);
      return reply.code(204).send();
    },
  );
  app.post(
    '/oidc/rules',
    {
      schema: {
        summary: 'Map a claim value to a project role or a group, e.g. eduperson_entitlement urn:mace:egi.eu:group:{project}:role=member#aai.egi.eu → reader',
        tags: ['access'],
        body: Type.Object({ claim: s, value: s, project: opt(s), role: opt(stringEnum(ROLES)), group: opt(s), issuer: opt(s) }),
      },
    },
    async (req, reply) => reply.code(201).send(await identity.addRule(ctxOf(req), req.body)),
  );
  app.delete('/oidc/rules/:id', { schema: { summary: 'Delete a claim rule', tags: ['access'], params: StringIdParams } }, async (req, reply) => {
    await identity.deleteRule(ctxOf(req), req.params.id);
    return reply.code(204).send();
  });

  // ---- audit --------------------------------------------------------------------------------
  app.get(
    '/audit',
    {
      schema: {
        summary: 'The audit log, newest first (server admins; project admins with ?project=)',
        tags: ['access'],
        querystring: Type.Object({
          actor: opt(s),
          action: opt(s),
          project: opt(s),
          target: opt(s),
          since: opt(Type.String({ format: 'date-time' })),
          limit: opt(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
          before: opt(s),
        }),
      },
    },
    async (req) => {
      const q = req.query;
      const limit = q.limit ?? 100;
      let before: { at: number; id: string } | undefined;
      if (q.before) {
        const m = /^(\d+):([\w-]+)$/.exec(q.before);
        if (!m) throw new DomainError('INVALID_REQUEST', 'before must be the "next" value of a previous page');
        before = { at: Number(m[1]), id: m[2]! };
      }
      const entries = await audit.query(ctxOf(req), {
        actor: q.actor,
        action: q.action,
        project: q.project,
        target: q.target,
        since: q.since ? new Date(q.since) : undefined,
        limit,
        before,
      });
      const last = entries[entries.length - 1];
      return { entries: entries.map(auditJson), next: entries.length === limit && last ? `${last.at.getTime()}:${last.id}` : undefined };
    },
  );
};

function projectJson(p: Project): Record<string, unknown> {
  return { name: p.name, description: p.description, createdAt: p.createdAt.toISOString(), quota: p.quota };
}

function tokenJson(t: TokenRecord): Record<string, unknown> {
  return {
    id: t.id,
    name: t.name,
    user: t.user,
    project: t.project,
    role: t.role,
    createdAt: t.createdAt.toISOString(),
    createdBy: t.createdBy,
    expiresAt: t.expiresAt?.toISOString(),
    revokedAt: t.revokedAt?.toISOString(),
    lastUsedAt: t.lastUsedAt?.toISOString(),
  };
}

function memberJson(m: ImageMember): Record<string, unknown> {
  return { imageId: m.imageId, project: m.project, status: m.status, createdAt: m.createdAt.toISOString(), updatedAt: m.updatedAt.toISOString() };
}

function auditJson(e: AuditEntry): Record<string, unknown> {
  return { ...e, at: e.at.toISOString() };
}
