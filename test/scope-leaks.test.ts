/**
 * Issue 18 item 7 (b, c), over the REST API of a real server: a refusal names only what the
 * server saw — never a path from the uploader's machine — and `sharedBytes` in the quota view
 * counts only images the caller may read, so it cannot reveal that another project stores the
 * same file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`what a server answer may reveal (${dialect})`, { timeout: 120_000 }, () => {
    let s: TestServer;
    let ann: string;
    let bob: string;
    let scratch: string;
    const as = (token: string) => ({ authorization: `Bearer ${token}` });

    before(async () => {
      s = await startTestServer({ dialect });
      scratch = mkdtempSync(join(tmpdir(), 'imago-secret-'));
      for (const p of ['pa', 'pb']) assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: p })).status, 201);
      ann = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'ann', project: 'pa', role: 'writer', user: 'ann' })).json!.token;
      bob = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'bob', project: 'pb', role: 'writer', user: 'bob' })).json!.token;
    });
    after(async () => {
      await s?.stop();
      rmSync(scratch, { recursive: true, force: true });
    });

    async function uploaded(token: string, project: string, bytes: Uint8Array): Promise<{ id: string; status: number; json: Record<string, any> }> {
      const id = (await apiRequest(s, 'POST', '/api/v1/images', { name: 'img', project }, as(token))).json!.id as string;
      const res = await fetch(`${s.url}/api/v1/images/${id}/file`, {
        method: 'PUT',
        headers: { ...as(token), 'content-type': 'application/octet-stream' },
        body: bytes,
      });
      return { id, status: res.status, json: (await res.json()) as Record<string, any> };
    }

    test('a refused VMDK whose extent names a local path: the reason does not repeat the path', async () => {
      const local = join(scratch, 'ext.raw');
      const descriptor = [
        '# Disk DescriptorFile',
        'version=1',
        'CID=fffffffe',
        'parentCID=ffffffff',
        'createType="monolithicFlat"',
        '',
        `RW 2048 FLAT "${local}" 0`,
        '',
        'ddb.virtualHWVersion = "4"',
        '',
      ].join('\n');
      const r = await uploaded(ann, 'pa', Buffer.from(descriptor));
      assert.equal(r.status, 422, JSON.stringify(r.json));
      assert.equal(r.json.code, 'UNSAFE_IMAGE');
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${r.id}`, undefined, as(ann))).json!;
      assert.equal(img.state, 'error');
      assert.match(img.stateReason, /VMDK_EXTENT_OUTSIDE/);
      assert.match(img.stateReason, /qemu-img convert/, 'the advice stays');
      for (const said of [r.json.detail, img.stateReason, JSON.stringify(r.json), JSON.stringify(img)]) {
        assert.ok(!said.includes(scratch) && !said.includes('ext.raw'), said);
      }
    });

    test("a refused qcow2 with a backing file on the uploader's disk: the reason does not name it", async () => {
      const file = join(scratch, 'overlay.qcow2');
      const made = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', join(scratch, 'base.raw'), '-F', 'raw', file, '1M']);
      assert.equal(made.status, 0, made.stderr.toString());
      const r = await uploaded(ann, 'pa', readFileSync(file));
      assert.equal(r.status, 422);
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${r.id}`, undefined, as(ann))).json!;
      assert.match(img.stateReason, /BACKING_FILE/);
      assert.ok(!img.stateReason.includes(scratch) && !img.stateReason.includes('base.raw'), img.stateReason);
      assert.ok(!JSON.stringify(r.json).includes(scratch));
    });

    test('sharedBytes counts only twins the caller may read', async () => {
      const bytes = randomBytes(128 * 1024);
      const secret = await uploaded(bob, 'pb', bytes);
      assert.equal(secret.status, 200);
      const mine = await uploaded(ann, 'pa', bytes);
      assert.equal(mine.status, 200);
      const annSees = async () => (await apiRequest(s, 'GET', '/api/v1/projects/pa/quota', undefined, as(ann))).json!.usage.sharedBytes as number;
      assert.equal(await annSees(), 0, 'an image in a project ann cannot read does not count');
      assert.equal((await apiRequest(s, 'GET', '/api/v1/projects/pa', undefined, as(ann))).json!.usage.sharedBytes, 0, 'project show says the same');
      assert.equal((await apiRequest(s, 'GET', '/api/v1/projects/pa/quota')).json!.usage.sharedBytes, bytes.length, 'server admins read everything');
      // once bob's image is public, ann may read it: now it counts
      assert.equal((await apiRequest(s, 'PATCH', `/api/v1/images/${secret.id}`, { visibility: 'public' })).status, 200);
      assert.equal(await annSees(), bytes.length);
      const q = (await apiRequest(s, 'GET', '/api/v1/projects/pa/quota', undefined, as(ann))).json!;
      assert.ok(q.rules.some((r: string) => /images you cannot read never count/.test(r)));
    });
  });
}
