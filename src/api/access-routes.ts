/**
 * REST routes of the access model: projects and their grants and quotas, users, groups, API
 * tokens, image members and permissions, OIDC issuers and claim rules, the audit log, whoami.
 * Handlers only shape requests and replies; AccessService decides.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { MEMBER_STATUSES, ROLES, type MemberStatus, type Role } from '../domain/access.js';
import type { AccessService, RequestContext } from '../domain/access-service.js';
import type { AuditEntry, ClaimRule, Project, TokenRecord } from '../domain/access-repository.js';
import { DomainError, invalid } from '../domain/errors.js';
import type { ImageMember } from '../domain/images/image.js';
import { imageJson } from './image-json.js';

/** The request's principal and address, as the domain wants them. */
export function ctxOf(req: FastifyRequest): RequestContext {
  return { principal: req.principal, remote: req.ip };
}

const s = { type: 'string' } as const;
const nameParam = { type: 'object', required: ['name'], properties: { name: { type: 'string', maxLength: 255 } } } as const;

export function registerAccessRoutes(app: FastifyInstance, access: AccessService): void {
  app.get('/api/v1/whoami', { schema: { summary: 'Who the credentials say you are', tags: ['access'] } }, async (req) => {
    const p = req.principal;
    return { kind: p.kind, user: p.user, serverAdmin: p.serverAdmin, roles: Object.fromEntries(p.roles), token: p.tokenId };
  });

  // ---- projects -----------------------------------------------------------------------------
  app.post(
    '/api/v1/projects',
    { schema: { summary: 'Create a project (server admins)', tags: ['access'], body: { type: 'object', required: ['name'], properties: { name: s, description: s } } } },
    async (req, reply) => {
      const b = req.body as { name: string; description?: string };
      const p = await access.createProject(ctxOf(req), b.name, b.description);
      return reply.code(201).header('location', `/api/v1/projects/${p.name}`).send(projectJson(p));
    },
  );
  app.get('/api/v1/projects', { schema: { summary: 'Projects you are in (all, for server admins)', tags: ['access'] } }, async (req) => ({
    projects: (await access.listProjects(ctxOf(req))).map((p) => ({ ...projectJson(p), role: p.role })),
  }));
  app.get('/api/v1/projects/:name', { schema: { summary: 'Show a project, its grants (admins) and usage', tags: ['access'], params: nameParam } }, async (req) => {
    const r = await access.showProject(ctxOf(req), (req.params as { name: string }).name);
    return { ...projectJson(r.project), grants: r.grants, usage: r.usage };
  });
  app.delete('/api/v1/projects/:name', { schema: { summary: 'Delete an empty project (server admins)', tags: ['access'], params: nameParam } }, async (req, reply) => {
    await access.deleteProject(ctxOf(req), (req.params as { name: string }).name);
    return reply.code(204).send();
  });
  app.put(
    '/api/v1/projects/:name/grants',
    {
      schema: {
        summary: 'Give a user or group a role in the project (project or server admins)',
        tags: ['access'],
        params: nameParam,
        body: { type: 'object', required: ['role'], properties: { user: s, group: s, role: { type: 'string', enum: [...ROLES] } } },
      },
    },
    async (req) => {
      const b = req.body as { user?: string; group?: string; role: Role };
      if ((b.user === undefined) === (b.group === undefined)) throw invalid('give exactly one of "user" or "group"');
      return access.grant(ctxOf(req), { project: (req.params as { name: string }).name, subjectKind: b.user !== undefined ? 'user' : 'group', subject: (b.user ?? b.group)!, role: b.role });
    },
  );
  app.delete(
    '/api/v1/projects/:name/grants/:kind/:subject',
    {
      schema: {
        summary: 'Remove a user\'s or group\'s role',
        tags: ['access'],
        params: { type: 'object', required: ['name', 'kind', 'subject'], properties: { name: s, kind: { type: 'string', enum: ['user', 'group'] }, subject: s } },
      },
    },
    async (req, reply) => {
      const p = req.params as { name: string; kind: 'user' | 'group'; subject: string };
      await access.revokeGrant(ctxOf(req), p.name, p.kind, p.subject);
      return reply.code(204).send();
    },
  );
  app.patch(
    '/api/v1/projects/:name',
    {
      schema: {
        summary: 'Set the project\'s convert-on-import target (server admins): a format, "none" (keep as uploaded) or null (the server\'s IMAGO_CONVERT_TO)',
        tags: ['access'],
        params: nameParam,
        body: { type: 'object', additionalProperties: false, required: ['convertTo'], properties: { convertTo: { type: ['string', 'null'], maxLength: 16 } } },
      },
    },
    async (req) => access.setProjectConvertTo(ctxOf(req), (req.params as { name: string }).name, (req.body as { convertTo: string | null }).convertTo),
  );
  app.get('/api/v1/projects/:name/quota', { schema: { summary: 'Quota limits, usage and what counts', tags: ['access'], params: nameParam } }, async (req) =>
    access.quota(ctxOf(req), (req.params as { name: string }).name),
  );
  const limit = { type: ['integer', 'null'], minimum: 0 } as const;
  app.put(
    '/api/v1/projects/:name/quota',
    {
      schema: {
        summary: 'Set quota limits (server admins); null = unlimited',
        tags: ['access'],
        params: nameParam,
        body: { type: 'object', additionalProperties: false, properties: { images: limit, storedBytes: limit, stagingBytes: limit, imports: limit } },
      },
    },
    async (req) => projectJson(await access.setQuota(ctxOf(req), (req.params as { name: string }).name, req.body as Record<string, number | null>)),
  );

  // ---- users and groups ---------------------------------------------------------------------
  app.post(
    '/api/v1/users',
    { schema: { summary: 'Create a user (server admins)', tags: ['access'], body: { type: 'object', required: ['name'], properties: { name: s, serverAdmin: { type: 'boolean' } } } } },
    async (req, reply) => {
      const b = req.body as { name: string; serverAdmin?: boolean };
      await access.createUser(ctxOf(req), b.name, b.serverAdmin ?? false);
      return reply.code(201).send({ name: b.name, serverAdmin: b.serverAdmin ?? false });
    },
  );
  app.get('/api/v1/users', { schema: { summary: 'Users and their roles (server admins)', tags: ['access'] } }, async (req) => ({
    users: (await access.listUsers(ctxOf(req))).map((u) => ({ ...u, createdAt: u.createdAt.toISOString() })),
  }));
  app.delete('/api/v1/users/:name', { schema: { summary: 'Delete a user; its tokens are revoked', tags: ['access'], params: nameParam } }, async (req, reply) => {
    await access.deleteUser(ctxOf(req), (req.params as { name: string }).name);
    return reply.code(204).send();
  });
  app.post(
    '/api/v1/groups',
    { schema: { summary: 'Create a group (a VO) (server admins)', tags: ['access'], body: { type: 'object', required: ['name'], properties: { name: s, description: s } } } },
    async (req, reply) => {
      const b = req.body as { name: string; description?: string };
      await access.createGroup(ctxOf(req), b.name, b.description);
      return reply.code(201).send({ name: b.name });
    },
  );
  app.get('/api/v1/groups', { schema: { summary: 'Groups and members (server admins)', tags: ['access'] } }, async (req) => ({ groups: await access.listGroups(ctxOf(req)) }));
  app.delete('/api/v1/groups/:name', { schema: { summary: 'Delete a group', tags: ['access'], params: nameParam } }, async (req, reply) => {
    await access.deleteGroup(ctxOf(req), (req.params as { name: string }).name);
    return reply.code(204).send();
  });
  for (const [method, add] of [['put', true], ['delete', false]] as const) {
    app[method](
      '/api/v1/groups/:name/members/:user',
      { schema: { summary: add ? 'Add a user to a group' : 'Remove a user from a group', tags: ['access'], params: { type: 'object', required: ['name', 'user'], properties: { name: s, user: s } } } },
      async (req, reply) => {
        const p = req.params as { name: string; user: string };
        await access.groupMember(ctxOf(req), p.name, p.user, add);
        return reply.code(204).send();
      },
    );
  }

  // ---- tokens -------------------------------------------------------------------------------
  app.post(
    '/api/v1/tokens',
    {
      schema: {
        summary: 'Create an API token; the secret is in this answer only',
        tags: ['access'],
        body: {
          type: 'object',
          required: ['name', 'role'],
          properties: { name: s, project: s, role: { type: 'string', enum: [...ROLES, 'server-admin'] }, expiresAt: { type: 'string', format: 'date-time' }, user: s },
        },
      },
    },
    async (req, reply) => {
      const b = req.body as { name: string; project?: string; role: Role | 'server-admin'; expiresAt?: string; user?: string };
      const expiresAt = b.expiresAt === undefined ? undefined : new Date(b.expiresAt);
      if (expiresAt && Number.isNaN(expiresAt.getTime())) throw invalid('expiresAt must be an ISO 8601 date-time', { field: 'expiresAt' });
      const r = await access.createToken(ctxOf(req), { name: b.name, project: b.project, role: b.role, expiresAt, user: b.user });
      return reply.code(201).send({ ...tokenJson(r.record), token: r.token });
    },
  );
  app.get(
    '/api/v1/tokens',
    { schema: { summary: 'Tokens you may manage (never their secrets)', tags: ['access'], querystring: { type: 'object', properties: { project: s, revoked: { type: 'boolean' } } } } },
    async (req) => {
      const q = req.query as { project?: string; revoked?: boolean };
      return { tokens: (await access.listTokens(ctxOf(req), { project: q.project, includeRevoked: q.revoked })).map(tokenJson) };
    },
  );
  app.delete('/api/v1/tokens/:id', { schema: { summary: 'Revoke a token', tags: ['access'], params: { type: 'object', required: ['id'], properties: { id: s } } } }, async (req, reply) => {
    await access.revokeToken(ctxOf(req), (req.params as { id: string }).id);
    return reply.code(204).send();
  });

  // ---- image members and permissions --------------------------------------------------------
  const idParam = { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 64 } } } as const;
  const memberParams = { type: 'object', required: ['id', 'project'], properties: { id: { type: 'string', maxLength: 64 }, project: s } } as const;
  app.get('/api/v1/images/:id/members', { schema: { summary: 'Projects the image is shared with', tags: ['sharing'], params: idParam } }, async (req) => ({
    members: (await access.members(ctxOf(req), (req.params as { id: string }).id)).map(memberJson),
  }));
  app.post(
    '/api/v1/images/:id/members',
    { schema: { summary: 'Share with a project (status pending until it accepts)', tags: ['sharing'], params: idParam, body: { type: 'object', required: ['project'], properties: { project: s } } } },
    async (req, reply) => reply.code(201).send(memberJson(await access.addMember(ctxOf(req), (req.params as { id: string }).id, (req.body as { project: string }).project))),
  );
  app.put(
    '/api/v1/images/:id/members/:project',
    {
      schema: {
        summary: 'The member project\'s answer: accepted or rejected',
        tags: ['sharing'],
        params: memberParams,
        body: { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: [...MEMBER_STATUSES] } } },
      },
    },
    async (req) => {
      const p = req.params as { id: string; project: string };
      return memberJson(await access.setMemberStatus(ctxOf(req), p.id, p.project, (req.body as { status: MemberStatus }).status));
    },
  );
  app.delete('/api/v1/images/:id/members/:project', { schema: { summary: 'Stop sharing with a project', tags: ['sharing'], params: memberParams } }, async (req, reply) => {
    const p = req.params as { id: string; project: string };
    await access.removeMember(ctxOf(req), p.id, p.project);
    return reply.code(204).send();
  });
  app.put(
    '/api/v1/images/:id/permissions',
    {
      schema: {
        summary: 'chmod: OpenNebula-style owner/group/other × use/manage/admin bits, e.g. {"mode":"640"}',
        tags: ['sharing'],
        params: idParam,
        body: { type: 'object', required: ['mode'], properties: { mode: { type: 'string', pattern: '^[0-7]{3}$' } } },
      },
    },
    async (req) => imageJson(await access.chmod(ctxOf(req), (req.params as { id: string }).id, (req.body as { mode: string }).mode)),
  );

  // ---- OIDC ---------------------------------------------------------------------------------
  app.get('/api/v1/oidc', { schema: { summary: 'Trusted OIDC issuers and claim rules (server admins)', tags: ['access'] } }, async (req) => access.listIssuers(ctxOf(req)));
  app.put(
    '/api/v1/oidc/issuers',
    {
      schema: {
        summary: 'Trust an OIDC issuer (server admins)',
        tags: ['access'],
        body: { type: 'object', required: ['issuer', 'audience'], properties: { issuer: s, audience: s, jwksUrl: s, usernameClaim: s } },
      },
    },
    async (req) => {
      const b = req.body as { issuer: string; audience: string; jwksUrl?: string; usernameClaim?: string };
      return access.putIssuer(ctxOf(req), { issuer: b.issuer, audience: b.audience, jwksUrl: b.jwksUrl, usernameClaim: b.usernameClaim ?? 'sub' });
    },
  );
  app.delete(
    '/api/v1/oidc/issuers',
    { schema: { summary: 'Stop trusting an issuer', tags: ['access'], querystring: { type: 'object', required: ['issuer'], properties: { issuer: s } } } },
    async (req, reply) => {
      await access.deleteIssuer(ctxOf(req), (req.query as { issuer: string }).issuer);
      return reply.code(204).send();
    },
  );
  app.post(
    '/api/v1/oidc/rules',
    {
      schema: {
        summary: 'Map a claim value to a project role or a group, e.g. eduperson_entitlement urn:mace:egi.eu:group:{project}:role=member#aai.egi.eu → reader',
        tags: ['access'],
        body: { type: 'object', required: ['claim', 'value'], properties: { claim: s, value: s, project: s, role: { type: 'string', enum: [...ROLES] }, group: s, issuer: s } },
      },
    },
    async (req, reply) => reply.code(201).send(await access.addRule(ctxOf(req), req.body as Omit<ClaimRule, 'id'>)),
  );
  app.delete('/api/v1/oidc/rules/:id', { schema: { summary: 'Delete a claim rule', tags: ['access'], params: { type: 'object', required: ['id'], properties: { id: s } } } }, async (req, reply) => {
    await access.deleteRule(ctxOf(req), (req.params as { id: string }).id);
    return reply.code(204).send();
  });

  // ---- audit --------------------------------------------------------------------------------
  app.get(
    '/api/v1/audit',
    {
      schema: {
        summary: 'The audit log, newest first (server admins; project admins with ?project=)',
        tags: ['access'],
        querystring: {
          type: 'object',
          properties: { actor: s, action: s, project: s, target: s, since: { type: 'string', format: 'date-time' }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 }, before: s },
        },
      },
    },
    async (req) => {
      const q = req.query as { actor?: string; action?: string; project?: string; target?: string; since?: string; limit: number; before?: string };
      let before: { at: number; id: string } | undefined;
      if (q.before) {
        const m = /^(\d+):([\w-]+)$/.exec(q.before);
        if (!m) throw new DomainError('INVALID_REQUEST', 'before must be the "next" value of a previous page');
        before = { at: Number(m[1]), id: m[2]! };
      }
      const entries = await access.audit(ctxOf(req), { actor: q.actor, action: q.action, project: q.project, target: q.target, since: q.since ? new Date(q.since) : undefined, limit: q.limit, before });
      const last = entries[entries.length - 1];
      return { entries: entries.map(auditJson), next: entries.length === q.limit && last ? `${last.at.getTime()}:${last.id}` : undefined };
    },
  );
}

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
