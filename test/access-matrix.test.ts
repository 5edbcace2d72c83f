/**
 * The permission matrix over the REST API, on SQLite and PostgreSQL: principals × operations ×
 * visibility, every cell asserted against a table written out by hand below (not computed by
 * the policy code it checks). Also: what a listing shows equals what show allows, for every
 * principal and image, so the SQL filter and the policy function cannot drift apart.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type Dialect, type TestServer } from './support/server.js';

type Who = 'serverAdmin' | 'projAdmin' | 'owner' | 'writer' | 'reader' | 'accepted' | 'pending' | 'rejected' | 'outsider' | 'anonymous' | 'expired' | 'revoked';
type Vis = 'private' | 'project' | 'shared' | 'public' | 'cluster';
type Op = 'list' | 'show' | 'download' | 'upload' | 'update' | 'delete' | 'share' | 'chmod';

const WHO: Who[] = ['serverAdmin', 'projAdmin', 'owner', 'writer', 'reader', 'accepted', 'pending', 'rejected', 'outsider', 'anonymous', 'expired', 'revoked'];
const VIS: Vis[] = ['private', 'project', 'shared', 'public', 'cluster'];
const OPS: Op[] = ['list', 'show', 'download', 'upload', 'update', 'delete', 'share', 'chmod'];

/** Who sees which visibility (use). A cluster-scope image (no project) is for server admins only (issue 18). */
const SEES: Record<Who, Vis[]> = {
  serverAdmin: ['private', 'project', 'shared', 'public', 'cluster'],
  projAdmin: ['private', 'project', 'shared', 'public'],
  owner: ['private', 'project', 'shared', 'public'],
  writer: ['project', 'shared', 'public'],
  reader: ['project', 'shared', 'public'],
  accepted: ['shared', 'public'],
  pending: ['public'],
  rejected: ['public'],
  outsider: ['public'],
  anonymous: ['public'],
  expired: [],
  revoked: [],
};
/** Who may upload/update/delete (manage). */
const MANAGES: Record<Who, Vis[]> = {
  serverAdmin: ['private', 'project', 'shared', 'public', 'cluster'],
  projAdmin: ['private', 'project', 'shared', 'public'],
  owner: ['private', 'project', 'shared', 'public'],
  writer: ['project', 'shared', 'public'],
  reader: [],
  accepted: [],
  pending: [],
  rejected: [],
  outsider: [],
  anonymous: [],
  expired: [],
  revoked: [],
};
/** Who may share and chmod (admin). */
const ADMINS: Record<Who, Vis[]> = {
  serverAdmin: ['private', 'project', 'shared', 'public', 'cluster'],
  projAdmin: ['private', 'project', 'shared', 'public'],
  owner: [],
  writer: [],
  reader: [],
  accepted: [],
  pending: [],
  rejected: [],
  outsider: [],
  anonymous: [],
  expired: [],
  revoked: [],
};

const NEEDS: Record<Op, Record<Who, Vis[]>> = {
  list: SEES,
  show: SEES,
  download: SEES,
  upload: MANAGES,
  update: MANAGES,
  delete: MANAGES,
  share: ADMINS,
  chmod: ADMINS,
};

const OK: Record<Op, number> = { list: 200, show: 200, download: 200, upload: 200, update: 200, delete: 204, share: 201, chmod: 200 };

/** The expected HTTP status of one cell. */
function expected(who: Who, op: Op, vis: Vis): number {
  if (who === 'expired' || who === 'revoked') return 401;
  const sees = SEES[who].includes(vis);
  if (!sees) return who === 'anonymous' ? 401 : 404;
  if (!NEEDS[op][who].includes(vis)) return 403;
  if (op === 'share' && vis !== 'shared') return 409; // allowed, but only shared images take members
  return OK[op];
}

const DATA = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 0xff);

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`permission matrix (${dialect})`, () => {
    let s: TestServer;
    const tokens = {} as Record<Who, string | undefined>;

    async function call(
      who: Who | string | undefined,
      method: string,
      path: string,
      body?: unknown,
      raw?: Uint8Array,
    ): Promise<{ status: number; json: any; text: string }> {
      const token = who === undefined ? undefined : who in tokens ? (tokens as Record<string, string | undefined>)[who] : who;
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (raw) headers['content-type'] = 'application/octet-stream';
      const res = await fetch(`${s.url}${path}`, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
      const text = await res.text();
      let json: any;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      return { status: res.status, json, text };
    }
    const ok = async (who: Who | string, method: string, path: string, body?: unknown, raw?: Uint8Array) => {
      const r = await call(who, method, path, body, raw);
      assert.ok(r.status < 300, `${method} ${path} as ${who}: ${r.status} ${r.text}`);
      return r.json;
    };

    async function token(name: string, project: string | undefined, role: string, user: string, expiresAt?: string): Promise<string> {
      const r = await ok('serverAdmin', 'POST', '/api/v1/tokens', { name, project, role, user, expiresAt });
      assert.match(r.token, /^imago_[0-9a-f]{16}_/);
      return r.token;
    }

    /** A fresh image in project alpha (owner: the owner principal) with visibility `vis` and 64 KiB of data. */
    async function image(vis: Vis, withData = true): Promise<string> {
      let img: any;
      if (vis === 'cluster') img = await ok('serverAdmin', 'POST', '/api/v1/images', { name: 'm-cluster', project: null });
      else img = await ok('owner', 'POST', '/api/v1/images', { name: `m-${vis}`, project: 'alpha', visibility: vis === 'public' ? 'project' : vis });
      if (vis === 'public') await ok('serverAdmin', 'PATCH', `/api/v1/images/${img.id}`, { visibility: 'public' });
      if (vis === 'shared') {
        for (const p of ['beta', 'delta', 'eps']) await ok('projAdmin', 'POST', `/api/v1/images/${img.id}/members`, { project: p });
        await ok('accepted', 'PUT', `/api/v1/images/${img.id}/members/beta`, { status: 'accepted' });
        await ok('rejected', 'PUT', `/api/v1/images/${img.id}/members/eps`, { status: 'rejected' });
      }
      if (withData) await ok('serverAdmin', 'PUT', `/api/v1/images/${img.id}/file`, undefined, DATA);
      return img.id;
    }

    const fixtures = {} as Record<Vis, string>;

    before(async () => {
      s = await startTestServer({ dialect });
      tokens.serverAdmin = s.token;
      for (const p of ['alpha', 'beta', 'gamma', 'delta', 'eps', 'zeta']) await ok('serverAdmin', 'POST', '/api/v1/projects', { name: p });
      tokens.projAdmin = await token('pa', 'alpha', 'admin', 'alice');
      tokens.owner = await token('ow', 'alpha', 'writer', 'olga');
      tokens.writer = await token('wr', 'alpha', 'writer', 'walt');
      tokens.reader = await token('rd', 'alpha', 'reader', 'rita');
      tokens.accepted = await token('acc', 'beta', 'writer', 'bob');
      tokens.pending = await token('pen', 'delta', 'writer', 'dora');
      tokens.rejected = await token('rej', 'eps', 'writer', 'erin');
      tokens.outsider = await token('out', 'gamma', 'writer', 'gus');
      tokens.anonymous = undefined;
      const rv = await ok('serverAdmin', 'POST', '/api/v1/tokens', { name: 'rev', project: 'alpha', role: 'admin', user: 'alice' });
      tokens.revoked = rv.token;
      assert.equal((await call('serverAdmin', 'DELETE', `/api/v1/tokens/${rv.id}`)).status, 204);
      for (const v of VIS) fixtures[v] = await image(v);
      const expiresAt = new Date(Date.now() + 2500).toISOString();
      tokens.expired = await token('exp', 'alpha', 'admin', 'alice', expiresAt);
      // the expiring token worked before it expired
      assert.equal((await call('expired', 'GET', `/api/v1/images/${fixtures.private}`)).status, 200);
      await new Promise((r) => setTimeout(r, Math.max(0, new Date(expiresAt).getTime() - Date.now() + 50)));
    });
    after(() => s?.stop());

    test('every cell: principals × operations × visibility', async () => {
      const failures: string[] = [];
      let cells = 0;
      const listed = new Map<Who, Set<string> | number>();
      for (const who of WHO) {
        const r = await call(who, 'GET', '/api/v1/images?limit=1000');
        listed.set(who, r.status === 200 ? new Set((r.json.images as { id: string }[]).map((i) => i.id)) : r.status);
      }
      for (const who of WHO) {
        for (const vis of VIS) {
          for (const op of OPS) {
            const want = expected(who, op, vis);
            let got: number;
            const id = ['upload', 'delete', 'chmod'].includes(op) ? await image(vis, op !== 'upload') : fixtures[vis];
            switch (op) {
              case 'list': {
                const l = listed.get(who)!;
                got = typeof l === 'number' ? l : l.has(id) ? 200 : who === 'anonymous' ? 401 : 404;
                break;
              }
              case 'show':
                got = (await call(who, 'GET', `/api/v1/images/${id}`)).status;
                break;
              case 'download': {
                const r = await call(who, 'GET', `/api/v1/images/${id}/file`);
                got = r.status;
                if (got === 200) assert.equal(r.text.length > 0, true);
                break;
              }
              case 'upload':
                got = (await call(who, 'PUT', `/api/v1/images/${id}/file`, undefined, DATA)).status;
                break;
              case 'update':
                got = (await call(who, 'PATCH', `/api/v1/images/${id}`, { description: `by ${who}` })).status;
                break;
              case 'delete':
                got = (await call(who, 'DELETE', `/api/v1/images/${id}`)).status;
                break;
              case 'share':
                got = (await call(who, 'POST', `/api/v1/images/${id}/members`, { project: 'zeta' })).status;
                break;
              case 'chmod':
                got = (await call(who, 'PUT', `/api/v1/images/${id}/permissions`, { mode: vis === 'public' ? '664' : vis === 'cluster' ? '600' : '640' }))
                  .status;
                break;
            }
            cells++;
            if (got !== want) failures.push(`${who} ${op} ${vis}: expected ${want}, got ${got}`);
          }
        }
      }
      assert.equal(cells, WHO.length * VIS.length * OPS.length);
      assert.deepEqual(failures, []);
    });

    test('a listing shows exactly the images show allows, for every principal', async () => {
      const ids = Object.values(fixtures);
      for (const who of WHO) {
        if (who === 'expired' || who === 'revoked') {
          assert.equal((await call(who, 'GET', '/api/v1/images')).status, 401);
          continue;
        }
        const listed = new Set(((await call(who, 'GET', '/api/v1/images?limit=1000')).json.images as { id: string }[]).map((i) => i.id));
        for (const id of ids) {
          const shown: boolean = (await call(who, 'GET', `/api/v1/images/${id}`)).status === 200;
          assert.equal(listed.has(id), shown, `${who}: listed ${listed.has(id)} but show ${shown} for ${id}`);
        }
      }
    });

    test('member offers: pending, accepted and rejected listings; status changes by the member only', async () => {
      const id = fixtures.shared;
      const offers = async (who: Who, status: string) =>
        ((await call(who, 'GET', `/api/v1/images?memberStatus=${status}`)).json.images as { id: string }[]).map((i) => i.id);
      // the matrix made more shared images with the same members: the fixture is among them
      for (const [who, status] of [
        ['pending', 'pending'],
        ['accepted', 'accepted'],
        ['rejected', 'rejected'],
      ] as const) {
        const list = await offers(who, status);
        assert.ok(list.includes(id), `${who} ${status}`);
        for (const other of await offers(who, status)) assert.equal((await call('serverAdmin', 'GET', `/api/v1/images/${other}`)).json.visibility, 'shared');
      }
      assert.equal((await offers('pending', 'rejected')).length, 0);
      assert.deepEqual(await offers('outsider', 'pending'), []);
      assert.deepEqual(await offers('pending', 'accepted'), []);
      // the owner project cannot answer for the member; an outsider learns nothing
      assert.equal((await call('projAdmin', 'PUT', `/api/v1/images/${id}/members/delta`, { status: 'accepted' })).status, 403);
      assert.equal((await call('outsider', 'PUT', `/api/v1/images/${id}/members/delta`, { status: 'accepted' })).status, 404);
      // members see only their own row; project admins see all
      assert.deepEqual(
        ((await call('pending', 'GET', `/api/v1/images/${id}/members`)).json.members as { project: string }[]).map((m) => m.project),
        ['delta'],
      );
      assert.equal(((await call('projAdmin', 'GET', `/api/v1/images/${id}/members`)).json.members as unknown[]).length >= 3, true);
      assert.equal((await call('outsider', 'GET', `/api/v1/images/${id}/members`)).status, 404);
      // accepting makes it visible; rejecting again hides it
      assert.equal((await call('pending', 'GET', `/api/v1/images/${id}`)).status, 404);
      assert.equal((await call('pending', 'PUT', `/api/v1/images/${id}/members/delta`, { status: 'accepted' })).status, 200);
      assert.equal((await call('pending', 'GET', `/api/v1/images/${id}`)).status, 200);
      assert.equal((await call('pending', 'PUT', `/api/v1/images/${id}/members/delta`, { status: 'rejected' })).status, 200);
      assert.equal((await call('pending', 'GET', `/api/v1/images/${id}`)).status, 404);
    });

    test('chmod maps onto visibility: 600 private, 640 project (group use only), 644 public for server admins', async () => {
      const id = await image('project');
      const chmod = (who: Who, mode: string) => call(who, 'PUT', `/api/v1/images/${id}/permissions`, { mode });
      let r = await chmod('projAdmin', '640');
      assert.equal(r.status, 200);
      assert.equal(r.json.visibility, 'project');
      assert.equal(r.json.permissionsText, 'um-u-----');
      // group has use only now: the non-owner writer may still read but not update; the owner may
      assert.equal((await call('writer', 'PATCH', `/api/v1/images/${id}`, { description: 'x' })).status, 403);
      assert.equal((await call('owner', 'PATCH', `/api/v1/images/${id}`, { description: 'x' })).status, 200);
      r = await chmod('projAdmin', '600');
      assert.equal(r.json.visibility, 'private');
      assert.equal((await call('reader', 'GET', `/api/v1/images/${id}`)).status, 404);
      assert.equal((await chmod('projAdmin', '644')).status, 403, 'only server admins make images public');
      r = await chmod('serverAdmin', '644');
      assert.equal(r.json.visibility, 'public');
      assert.equal((await call(undefined, 'GET', `/api/v1/images/${id}`)).status, 200);
      // owner with the admin bit (OpenNebula's A) may chmod and share its own image
      await chmod('serverAdmin', '760');
      assert.equal((await chmod('owner', '740')).status, 200);
      // nonsense modes are refused with a reason
      for (const bad of ['662', '999', '0640', '170']) {
        const b = await chmod('serverAdmin', bad);
        assert.equal(b.status, 400, bad);
      }
    });

    test('the event stream shows each principal only the images it may see', async () => {
      const seen = async (who: Who | undefined, during: () => Promise<void>) => {
        const ac = new AbortController();
        const headers: Record<string, string> = {};
        const t = who ? tokens[who] : undefined;
        if (t) headers.authorization = `Bearer ${t}`;
        const res = await fetch(`${s.url}/api/v1/events`, { headers, signal: ac.signal });
        assert.equal(res.status, 200);
        let text = '';
        const reading = (async () => {
          try {
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(chunk).toString();
          } catch {
            // aborted
          }
        })();
        await new Promise((r) => setTimeout(r, 100));
        await during();
        await new Promise((r) => setTimeout(r, 300));
        ac.abort();
        await reading;
        return text;
      };
      const touch = async () => {
        for (const v of ['private', 'project', 'public'] as const)
          await ok('serverAdmin', 'PATCH', `/api/v1/images/${fixtures[v]}`, { description: `tick ${Date.now()}` });
      };
      const outsider = await seen('outsider', touch);
      assert.ok(outsider.includes(fixtures.public));
      assert.ok(!outsider.includes(fixtures.private) && !outsider.includes(fixtures.project));
      const reader = await seen('reader', touch);
      assert.ok(reader.includes(fixtures.public) && reader.includes(fixtures.project));
      assert.ok(!reader.includes(fixtures.private));
      const anon = await seen(undefined, touch);
      assert.ok(anon.includes(fixtures.public) && !anon.includes(fixtures.project));
      assert.equal((await call('revoked', 'GET', '/api/v1/events')).status, 401);
    });

    test('cluster scope: server admins only, and the JSON says so; only server admins create', async () => {
      const r = await call('projAdmin', 'POST', '/api/v1/images', { name: 'cv', project: null });
      assert.equal(r.status, 403);
      assert.match(r.json.detail, /server administrators/);
      for (const who of ['outsider', 'reader', 'projAdmin'] as const) {
        assert.equal((await call(who, 'GET', `/api/v1/images/${fixtures.cluster}/file`)).status, 404, who);
        assert.equal((await call(who, 'GET', `/api/v1/images/${fixtures.cluster}`)).status, 404, who);
      }
      const shown = (await call('serverAdmin', 'GET', `/api/v1/images/${fixtures.cluster}`)).json;
      assert.equal(shown.project, null);
      assert.equal(shown.scope, 'cluster');
      assert.equal(shown.visibility, 'private');
      assert.equal(shown.permissions, '600');
      // no project to be visible to: project/shared are refused, with what is possible
      const bad = await call('serverAdmin', 'POST', '/api/v1/images', { name: 'cv', project: null, visibility: 'project' });
      assert.equal(bad.status, 400);
      assert.match(bad.json.detail, /use "private" or "public"/);
      assert.equal((await call('serverAdmin', 'PUT', `/api/v1/images/${fixtures.cluster}/permissions`, { mode: '640' })).status, 400);
      // made public, everyone (anonymous included) reads it, and it says so
      const pub = await ok('serverAdmin', 'POST', '/api/v1/images', { name: 'cv-public', project: null, visibility: 'public' });
      assert.equal(pub.visibility, 'public');
      assert.equal(pub.permissions, '604');
      assert.equal((await call('outsider', 'GET', `/api/v1/images/${pub.id}`)).status, 200);
      assert.equal((await call('anonymous', 'GET', `/api/v1/images/${pub.id}`)).status, 200);
    });

    test('401 names the problem: expired and revoked tokens, malformed credentials', async () => {
      const exp = await call('expired', 'GET', '/api/v1/images');
      assert.equal(exp.status, 401);
      assert.match(exp.json.detail, /expired at/);
      const rev = await call('revoked', 'GET', '/api/v1/images');
      assert.match(rev.json.detail, /revoked/);
      for (const bad of ['imago_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'imago_short', 'garbage']) {
        const r = await call(bad, 'GET', '/api/v1/images');
        assert.equal(r.status, 401, bad);
      }
      // a wrong secret for a real token id is refused the same way as an unknown id
      const real = tokens.reader!;
      const forged = real.slice(0, -4) + (real.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      assert.equal((await call(forged, 'GET', '/api/v1/images')).status, 401);
      // HTTP Basic with the token as password works (OCI clients)
      const basic = await fetch(`${s.url}/api/v1/whoami`, { headers: { authorization: `Basic ${Buffer.from(`x:${real}`).toString('base64')}` } });
      assert.equal(basic.status, 200);
      assert.deepEqual(((await basic.json()) as { roles: unknown }).roles, { alpha: 'reader' });
    });

    test('token minting: nobody mints more than they have', async () => {
      assert.equal((await call('writer', 'POST', '/api/v1/tokens', { name: 't', project: 'alpha', role: 'admin' })).status, 403);
      assert.equal((await call('writer', 'POST', '/api/v1/tokens', { name: 't', project: 'beta', role: 'reader' })).status, 403);
      assert.equal((await call('projAdmin', 'POST', '/api/v1/tokens', { name: 't', role: 'server-admin' })).status, 403);
      const mine = await call('writer', 'POST', '/api/v1/tokens', { name: 't', project: 'alpha', role: 'reader' });
      assert.equal(mine.status, 201);
      const w = await call(mine.json.token, 'GET', '/api/v1/whoami');
      assert.deepEqual(w.json.roles, { alpha: 'reader' });
      assert.equal(w.json.user, 'walt');
      // the secret is never listed
      const list = await call('writer', 'GET', '/api/v1/tokens');
      // (the secret is everything after `imago_<16 hex>_`: base64url, which may itself hold '_')
      assert.equal(list.text.includes(mine.json.token.slice('imago_'.length + 17)), false);
      // another writer cannot revoke it (404: not theirs to know), the project admin can
      assert.equal((await call('owner', 'DELETE', `/api/v1/tokens/${mine.json.id}`)).status, 404);
      assert.equal((await call('projAdmin', 'DELETE', `/api/v1/tokens/${mine.json.id}`)).status, 204);
      assert.equal((await call(mine.json.token, 'GET', '/api/v1/whoami')).status, 401);
    });
  });
}
