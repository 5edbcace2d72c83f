/**
 * Remote verbs of the access model: `imago project|user|group|token|member|quota|audit|oidc|whoami`.
 * Thin wrappers over the REST API (src/api/rest/access-routes.ts); the server decides.
 */
import type { Command } from 'commander';
import type { ImageJson } from '../api/rest/image-json.js';
import { parseBytes } from '../config.js';
import { ApiError, type ImagoClient } from './client.js';
import { table, type RemoteContext } from './image-commands.js';
import { humanBytes, toJson } from './json.js';

interface Common {
  server?: string;
  token?: string;
  data?: string;
  output?: 'table' | 'json';
}

const enc = encodeURIComponent;

/** "30d", "12h", "90m", or an ISO date → ISO date. */
export function expiryOf(s: string, now = Date.now()): string {
  const m = /^(\d+)([mhdw])$/.exec(s.trim());
  if (m) {
    const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'm' | 'h' | 'd' | 'w'];
    return new Date(now + Number(m[1]) * unit).toISOString();
  }
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) throw new ApiError(0, 'USAGE', `expiry "${s}" must be like 30d, 12h, 90m or an ISO date`);
  return d.toISOString();
}

function limitOf(name: string, v: string | undefined, bytes: boolean): number | null | undefined {
  if (v === undefined) return undefined;
  if (v === 'none' || v === 'unlimited') return null;
  if (bytes) return parseBytes(name, v, 0);
  if (!/^\d+$/.test(v)) throw new ApiError(0, 'USAGE', `--${name} must be a whole number or "none"`);
  return Number(v);
}

export function registerAccessCommands(program: Command, ctx: RemoteContext): void {
  const remote = (c: Command) =>
    c
      .option('--server <url>', 'Imago server (default IMAGO_URL or http://127.0.0.1:9393)')
      .option('--token <token>', 'API token (default IMAGO_TOKEN, else <data>/admin.token of a local server)')
      .option('--data <dir>', 'local data dir whose admin.token to use')
      .option('-o, --output <format>', 'table or json', 'table');
  const run =
    <A extends unknown[]>(fn: (c: ImagoClient, ...args: A) => Promise<void>) =>
    async (...args: A) => {
      const f = args[args.length - 2] as Common;
      try {
        await fn(ctx.client(f), ...args);
      } catch (e) {
        if (e instanceof ApiError) {
          process.stderr.write(`imago: ${e.message}${e.code && e.code !== 'HTTP_ERROR' ? ` [${e.code}]` : ''}\n`);
          ctx.setExit(2);
          return;
        }
        throw e;
      }
    };
  const out = (f: Common, value: unknown, human: () => string) => process.stdout.write(f.output === 'json' ? `${toJson(value, 2)}\n` : human());

  remote(program.command('whoami').description('show who your credentials make you')).action(
    run(async (c, f: Common) => {
      const w = await c.request<{ kind: string; user?: string; serverAdmin: boolean; roles: Record<string, string> }>('GET', '/api/v1/whoami');
      out(
        f,
        w,
        () =>
          `${w.user ?? 'anonymous'} (${w.kind}${w.serverAdmin ? ', server admin' : ''})\n${Object.entries(w.roles)
            .map(([p, r]) => `  ${p}: ${r}\n`)
            .join('')}`,
      );
    }),
  );

  // ---- project ------------------------------------------------------------------------------
  const project = program.command('project').description('projects (namespaces owning images; a VO is one), their roles and quotas');
  remote(project.command('create').argument('<name>').option('--description <text>')).action(
    run(async (c, name: string, f: Common & { description?: string }) => {
      const p = await c.request('POST', '/api/v1/projects', { name, description: f.description });
      out(f, p, () => `project ${name} created\n`);
    }),
  );
  remote(project.command('list')).action(
    run(async (c, f: Common) => {
      const r = await c.request<{ projects: { name: string; role?: string; description?: string }[] }>('GET', '/api/v1/projects');
      out(f, r.projects, () => table([['NAME', 'YOUR ROLE', 'DESCRIPTION'], ...r.projects.map((p) => [p.name, p.role ?? '', p.description ?? ''])]));
    }),
  );
  remote(project.command('show').argument('<name>')).action(
    run(async (c, name: string, f: Common) => {
      const r = await c.request<{ name: string; grants?: { subjectKind: string; subject: string; role: string }[]; usage: Record<string, number> }>(
        'GET',
        `/api/v1/projects/${enc(name)}`,
      );
      out(
        f,
        r,
        () =>
          `project ${r.name}\n${(r.grants ?? []).map((g) => `  ${g.subjectKind} ${g.subject}: ${g.role}\n`).join('')}  images: ${r.usage.images}, stored: ${humanBytes(r.usage.storedBytes)}\n`,
      );
    }),
  );
  remote(project.command('delete').argument('<name>')).action(
    run(async (c, name: string) => {
      await c.request('DELETE', `/api/v1/projects/${enc(name)}`);
      process.stdout.write(`project ${name} deleted\n`);
    }),
  );
  remote(project.command('grant').description('give a user or a group a role: reader, writer or admin').argument('<project>').argument('<role>'))
    .option('--user <name>')
    .option('--group <name>')
    .action(
      run(async (c, proj: string, role: string, f: Common & { user?: string; group?: string }) => {
        if (!f.user === !f.group) throw new ApiError(0, 'USAGE', 'give --user NAME or --group NAME');
        await c.request('PUT', `/api/v1/projects/${enc(proj)}/grants`, { role, ...(f.user ? { user: f.user } : { group: f.group }) });
        process.stdout.write(`${f.user ? `user ${f.user}` : `group ${f.group}`} is ${role} in ${proj}\n`);
      }),
    );
  remote(project.command('revoke').argument('<project>'))
    .option('--user <name>')
    .option('--group <name>')
    .action(
      run(async (c, proj: string, f: Common & { user?: string; group?: string }) => {
        if (!f.user === !f.group) throw new ApiError(0, 'USAGE', 'give --user NAME or --group NAME');
        await c.request('DELETE', `/api/v1/projects/${enc(proj)}/grants/${f.user ? 'user' : 'group'}/${enc((f.user ?? f.group)!)}`);
        process.stdout.write(`role removed\n`);
      }),
    );
  remote(
    project
      .command('map')
      .description('OIDC: grant a role in this project to tokens whose claim holds a value (e.g. an EGI entitlement)')
      .argument('<project>')
      .argument('<role>')
      .requiredOption('--value <value>', 'claim value, e.g. urn:mace:egi.eu:group:myvo:role=member#aai.egi.eu')
      .option('--claim <claim>', 'claim name', 'eduperson_entitlement')
      .option('--issuer <url>', 'only tokens of this issuer'),
  ).action(
    run(async (c, proj: string, role: string, f: Common & { value: string; claim: string; issuer?: string }) => {
      const r = await c.request<{ id: string }>('POST', '/api/v1/oidc/rules', { claim: f.claim, value: f.value, project: proj, role, issuer: f.issuer });
      out(f, r, () => `rule ${r.id}: ${f.claim} = ${f.value} → ${role} in ${proj}\n`);
    }),
  );

  // ---- quota --------------------------------------------------------------------------------
  const quota = program.command('quota').description('project quotas: image count, stored bytes, staging bytes, concurrent imports');
  remote(quota.command('show').argument('<project>')).action(
    run(async (c, proj: string, f: Common) => {
      const q = await c.request<{ limits: Record<string, number>; usage: Record<string, number>; rules: string[] }>(
        'GET',
        `/api/v1/projects/${enc(proj)}/quota`,
      );
      out(f, q, () => {
        const row = (k: string, label: string, bytes: boolean) => {
          const fmt = (n: number | undefined) => (n === undefined ? 'unlimited' : bytes ? `${humanBytes(n)} (${n})` : String(n));
          return [label, fmt(q.usage[k] ?? 0), fmt(q.limits[k])];
        };
        return (
          table([
            ['', 'IN USE', 'LIMIT'],
            row('images', 'images', false),
            row('storedBytes', 'stored bytes', true),
            row('stagingBytes', 'staging bytes', true),
            row('imports', 'imports', false),
          ]) +
          `of the stored bytes, ${humanBytes(q.usage.sharedBytes ?? 0)} are also held by other images (still counted: see rules)\n\nWhat counts:\n${q.rules.map((r) => `  - ${r}\n`).join('')}`
        );
      });
    }),
  );
  remote(quota.command('set').argument('<project>'))
    .option('--images <n>', 'image count ("none" = unlimited)')
    .option('--stored <bytes>', 'stored bytes, e.g. 500G')
    .option('--staging <bytes>', 'bytes in running uploads')
    .option('--imports <n>', 'concurrent imports')
    .action(
      run(async (c, proj: string, f: Common & { images?: string; stored?: string; staging?: string; imports?: string }) => {
        const body: Record<string, number | null> = {};
        const put = (k: string, v: number | null | undefined) => {
          if (v !== undefined) body[k] = v;
        };
        put('images', limitOf('images', f.images, false));
        put('storedBytes', limitOf('stored', f.stored, true));
        put('stagingBytes', limitOf('staging', f.staging, true));
        put('imports', limitOf('imports', f.imports, false));
        const r = await c.request('PUT', `/api/v1/projects/${enc(proj)}/quota`, body);
        out(f, r, () => `quota of ${proj} set\n`);
      }),
    );

  // ---- user / group -------------------------------------------------------------------------
  const user = program.command('user').description('users (server admins)');
  remote(user.command('create').argument('<name>').option('--server-admin', 'make a server administrator')).action(
    run(async (c, name: string, f: Common & { serverAdmin?: boolean }) => {
      await c.request('POST', '/api/v1/users', { name, serverAdmin: f.serverAdmin ?? false });
      process.stdout.write(`user ${name} created\n`);
    }),
  );
  remote(user.command('list')).action(
    run(async (c, f: Common) => {
      const r = await c.request<{ users: { name: string; serverAdmin: boolean; grants: { project: string; role: string }[] }[] }>('GET', '/api/v1/users');
      out(f, r.users, () =>
        table([
          ['NAME', 'SERVER ADMIN', 'ROLES'],
          ...r.users.map((u) => [u.name, u.serverAdmin ? 'yes' : '', u.grants.map((g) => `${g.project}:${g.role}`).join(' ')]),
        ]),
      );
    }),
  );
  remote(user.command('delete').argument('<name>')).action(
    run(async (c, name: string) => {
      await c.request('DELETE', `/api/v1/users/${enc(name)}`);
      process.stdout.write(`user ${name} deleted; its tokens are revoked\n`);
    }),
  );
  const group = program.command('group').description('groups of users (a VO is a group); grant a group a role with "./bin/imago.js project grant"');
  remote(group.command('create').argument('<name>').option('--description <text>')).action(
    run(async (c, name: string, f: Common & { description?: string }) => {
      await c.request('POST', '/api/v1/groups', { name, description: f.description });
      process.stdout.write(`group ${name} created\n`);
    }),
  );
  remote(group.command('list')).action(
    run(async (c, f: Common) => {
      const r = await c.request<{ groups: { name: string; members: string[] }[] }>('GET', '/api/v1/groups');
      out(f, r.groups, () => table([['NAME', 'MEMBERS'], ...r.groups.map((g) => [g.name, g.members.join(' ')])]));
    }),
  );
  remote(group.command('add').argument('<group>').argument('<user>')).action(
    run(async (c, g: string, u: string) => {
      await c.request('PUT', `/api/v1/groups/${enc(g)}/members/${enc(u)}`);
      process.stdout.write(`${u} added to ${g}\n`);
    }),
  );
  remote(group.command('remove').argument('<group>').argument('<user>')).action(
    run(async (c, g: string, u: string) => {
      await c.request('DELETE', `/api/v1/groups/${enc(g)}/members/${enc(u)}`);
      process.stdout.write(`${u} removed from ${g}\n`);
    }),
  );
  remote(group.command('delete').argument('<name>')).action(
    run(async (c, name: string) => {
      await c.request('DELETE', `/api/v1/groups/${enc(name)}`);
      process.stdout.write(`group ${name} deleted\n`);
    }),
  );

  // ---- token --------------------------------------------------------------------------------
  const token = program.command('token').description('API tokens (Bearer, or the password of HTTP Basic)');
  remote(token.command('create').description('create a token; its secret is printed once').argument('<name>'))
    .option('--project <project>', 'the project it acts in')
    .option('--role <role>', 'reader, writer, admin or server-admin', 'reader')
    .option('--expires <when>', 'e.g. 30d, 12h or an ISO date (default: never)')
    .option('--user <user>', 'the user it acts for (admins; default: you)')
    .action(
      run(async (c, name: string, f: Common & { project?: string; role: string; expires?: string; user?: string }) => {
        const r = await c.request<{ id: string; token: string; expiresAt?: string }>('POST', '/api/v1/tokens', {
          name,
          project: f.project,
          role: f.role,
          user: f.user,
          expiresAt: f.expires ? expiryOf(f.expires) : undefined,
        });
        out(f, r, () => `${r.token}\n`);
        if (f.output !== 'json')
          process.stderr.write(
            `token ${r.id} (${f.role}${f.project ? ` in ${f.project}` : ''}${r.expiresAt ? `, expires ${r.expiresAt}` : ''}); the secret above is not shown again\n`,
          );
      }),
    );
  remote(token.command('list'))
    .option('--project <project>')
    .option('--revoked', 'include revoked tokens')
    .action(
      run(async (c, f: Common & { project?: string; revoked?: boolean }) => {
        const qs = new URLSearchParams();
        if (f.project) qs.set('project', f.project);
        if (f.revoked) qs.set('revoked', 'true');
        const r = await c.request<{ tokens: Record<string, string | undefined>[] }>('GET', `/api/v1/tokens${qs.size ? `?${qs}` : ''}`);
        out(f, r.tokens, () =>
          table([
            ['ID', 'NAME', 'USER', 'PROJECT', 'ROLE', 'EXPIRES', 'REVOKED', 'LAST USED'],
            ...r.tokens.map((t) => [t.id!, t.name!, t.user!, t.project ?? '', t.role!, t.expiresAt ?? 'never', t.revokedAt ?? '', t.lastUsedAt ?? '']),
          ]),
        );
      }),
    );
  remote(token.command('revoke').argument('<id>')).action(
    run(async (c, id: string) => {
      await c.request('DELETE', `/api/v1/tokens/${enc(id)}`);
      process.stdout.write(`token ${id} revoked\n`);
    }),
  );

  // ---- member -------------------------------------------------------------------------------
  const member = program.command('member').description('image sharing between projects (Glance members): add, accept, reject, list');
  remote(member.command('add').argument('<image>').argument('<project>')).action(
    run(async (c, id: string, proj: string, f: Common) => {
      const img = await c.resolve(id);
      const r = await c.request('POST', `/api/v1/images/${enc(img.id)}/members`, { project: proj });
      out(f, r, () => `${img.name} offered to ${proj} (pending until it accepts)\n`);
    }),
  );
  for (const [verb, status] of [
    ['accept', 'accepted'],
    ['reject', 'rejected'],
  ] as const) {
    remote(
      member
        .command(verb)
        .description(`${verb} an image offered to your project`)
        .argument('<image-id>')
        .requiredOption('--project <project>', 'your project that was offered it'),
    ).action(
      run(async (c, id: string, f: Common & { project: string }) => {
        const r = await c.request('PUT', `/api/v1/images/${enc(id)}/members/${enc(f.project)}`, { status });
        out(f, r, () => `${f.project}: ${status}\n`);
      }),
    );
  }
  remote(member.command('remove').argument('<image>').argument('<project>')).action(
    run(async (c, id: string, proj: string) => {
      const img = await c.resolve(id);
      await c.request('DELETE', `/api/v1/images/${enc(img.id)}/members/${enc(proj)}`);
      process.stdout.write(`${img.name} no longer shared with ${proj}\n`);
    }),
  );
  remote(member.command('list').argument('<image>')).action(
    run(async (c, id: string, f: Common) => {
      const img = await c.resolve(id);
      const r = await c.request<{ members: { project: string; status: string; updatedAt: string }[] }>('GET', `/api/v1/images/${enc(img.id)}/members`);
      out(f, r.members, () => table([['PROJECT', 'STATUS', 'SINCE'], ...r.members.map((m) => [m.project, m.status, m.updatedAt])]));
    }),
  );
  remote(
    member.command('offers').description('images offered to your projects').option('--status <status>', 'pending, accepted or rejected', 'pending'),
  ).action(
    run(async (c, f: Common & { status: string }) => {
      const r = await c.list({ memberStatus: f.status, limit: '1000' });
      out(f, r.images, () =>
        table([['ID', 'NAME', 'FROM PROJECT', 'STATE'], ...r.images.map((i: ImageJson) => [i.id, i.name ?? '', String(i.project ?? ''), i.state])]),
      );
    }),
  );

  // ---- audit --------------------------------------------------------------------------------
  remote(program.command('audit').description('the audit log, newest first (server admins; project admins with --project)'))
    .option('--actor <text>', 'actor contains')
    .option('--action <action>', 'e.g. image.delete, token.create')
    .option('--project <project>')
    .option('--target <id>')
    .option('--since <iso>')
    .option('--limit <n>', 'entries', '50')
    .action(
      run(async (c, f: Common & { actor?: string; action?: string; project?: string; target?: string; since?: string; limit: string }) => {
        const qs = new URLSearchParams({ limit: f.limit });
        for (const k of ['actor', 'action', 'project', 'target', 'since'] as const) if (f[k]) qs.set(k, f[k]!);
        const r = await c.request<{
          entries: { at: string; actor: string; action: string; target?: string; project?: string; remote?: string; result: string }[];
        }>('GET', `/api/v1/audit?${qs}`);
        out(f, r.entries, () =>
          table([
            ['WHEN', 'ACTOR', 'ACTION', 'TARGET', 'PROJECT', 'FROM', 'RESULT'],
            ...r.entries.map((e) => [e.at, e.actor, e.action, e.target ?? '', e.project ?? '', e.remote ?? '', e.result]),
          ]),
        );
      }),
    );

  // ---- oidc ---------------------------------------------------------------------------------
  const oidc = program.command('oidc').description('trusted OIDC issuers (e.g. EGI Check-in) and claim rules');
  remote(oidc.command('add').description('trust an issuer').argument('<issuer>').requiredOption('--audience <aud>', 'the client id tokens must be issued for'))
    .option('--jwks-url <url>', "default: from the issuer's discovery document")
    .option('--username-claim <claim>', 'claim naming the user', 'sub')
    .action(
      run(async (c, issuer: string, f: Common & { audience: string; jwksUrl?: string; usernameClaim: string }) => {
        await c.request('PUT', '/api/v1/oidc/issuers', { issuer, audience: f.audience, jwksUrl: f.jwksUrl, usernameClaim: f.usernameClaim });
        process.stdout.write(`issuer ${issuer} trusted (audience ${f.audience})\n`);
      }),
    );
  remote(
    oidc
      .command('map')
      .description('claim value → role; {project} in the value captures the project, e.g. urn:mace:egi.eu:group:{project}:role=member#aai.egi.eu')
      .requiredOption('--value <value>')
      .option('--claim <claim>', 'claim name', 'eduperson_entitlement')
      .option('--role <role>', 'reader, writer or admin')
      .option('--project <project>', 'when the value has no {project}')
      .option('--group <group>', 'or: make the user a member of this group')
      .option('--issuer <url>'),
  ).action(
    run(async (c, f: Common & { value: string; claim: string; role?: string; project?: string; group?: string; issuer?: string }) => {
      const r = await c.request<{ id: string }>('POST', '/api/v1/oidc/rules', {
        claim: f.claim,
        value: f.value,
        role: f.role,
        project: f.project,
        group: f.group,
        issuer: f.issuer,
      });
      out(f, r, () => `rule ${r.id} added\n`);
    }),
  );
  remote(oidc.command('list')).action(
    run(async (c, f: Common) => {
      const r = await c.request<{
        issuers: { issuer: string; audience: string }[];
        rules: { id: string; claim: string; value: string; role?: string; project?: string; group?: string }[];
      }>('GET', '/api/v1/oidc');
      out(
        f,
        r,
        () =>
          table([['ISSUER', 'AUDIENCE'], ...r.issuers.map((i) => [i.issuer, i.audience])]) +
          table([
            ['RULE', 'CLAIM', 'VALUE', 'GRANTS'],
            ...r.rules.map((x) => [x.id, x.claim, x.value, x.group ? `group ${x.group}` : `${x.role} in ${x.project ?? '{project}'}`]),
          ]),
      );
    }),
  );
  remote(oidc.command('unmap').argument('<rule-id>')).action(
    run(async (c, id: string) => {
      await c.request('DELETE', `/api/v1/oidc/rules/${enc(id)}`);
      process.stdout.write(`rule ${id} deleted\n`);
    }),
  );
}
