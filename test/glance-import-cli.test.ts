/**
 * Glance's interoperable import driven by Debian's real glanceclient (through
 * ../shared/peers/bin/glance, which only works around its schema-cache bug) against a real Imago
 * on 127.0.0.1: image-create-via-import with glance-direct (--file) and web-download (--uri, from
 * an HTTP server on 127.0.0.1 that the server's IMAGO_IMPORT_ALLOW lets through), image-stage +
 * image-import, a hostile stage refused, import-info, stores-info, usage, image-tasks, and
 * task-list / task-show as a server administrator. Downloads are byte-identical (glanceclient
 * verifies os_hash_value).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { qemuCreate } from './support/qemu.js';
import { startTestServer, type TestServer } from './support/server.js';

const GLANCE = '/work/shared/peers/bin/glance';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs glance with its standard input closed (an open one is read as image data). */
function run(args: string[], home: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      '/bin/sh',
      ['-c', 'exec "$@" 0<&-', 'sh', GLANCE, ...args],
      { env: { PATH: process.env.PATH, HOME: home, LANG: 'C.UTF-8' }, timeout: 120_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The `| key | value |` rows glanceclient prints for one object (a long value wraps onto rows without a key). */
function fields(out: string): Record<string, string> {
  const f: Record<string, string> = {};
  let last: string | undefined;
  for (const line of out.split('\n')) {
    const m = /^\|\s*(\S*)\s*\|\s*(.*?)\s*\|$/.exec(line);
    if (!m || m[1] === 'Property') continue;
    if (m[1] === '' && last !== undefined) f[last] += m[2]!;
    else f[(last = m[1]!)] = m[2]!;
  }
  return f;
}

/** A printed table without its frame and spacing: what it says, whatever the column widths. */
const flat = (out: string) => out.replace(/[\s|+-]/g, '');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('glance image import commands against /image (sqlite)', () => {
  let s: TestServer;
  let home: string;
  let token: string;
  let disk: string;
  let bytes: Buffer;
  let files: Server;
  let filesUrl: string;

  const glanceAs = async (t: string, ...args: string[]): Promise<string> => {
    const r = await run(['--os-image-url', `${s.url}/image`, '--os-auth-token', t, ...args], home);
    assert.equal(r.code, 0, `glance ${args.join(' ')}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const glance = (...args: string[]) => glanceAs(token, ...args);
  const glanceFails = async (...args: string[]): Promise<string> => {
    const r = await run(['--os-image-url', `${s.url}/image`, '--os-auth-token', token, ...args], home);
    assert.notEqual(r.code, 0, `glance ${args.join(' ')} should fail: ${r.stdout}`);
    return r.stderr + r.stdout;
  };
  async function activeAndIdentical(id: string): Promise<Record<string, string>> {
    let f: Record<string, string> = {};
    for (let i = 0; i < 100; i++) {
      f = fields(await glance('image-show', id));
      if (f.status === 'active') break;
      await sleep(100);
    }
    assert.equal(f.status, 'active', JSON.stringify(f));
    assert.equal(f.os_hash_value, createHash('sha512').update(bytes).digest('hex'));
    const out = join(home, `${id}.out`);
    await glance('image-download', '--file', out, id);
    assert.ok(readFileSync(out).equals(bytes), 'downloaded byte-identical');
    return f;
  }

  before(async () => {
    home = mkdtempSync(join(tmpdir(), 'imago-glance-import-home-'));
    disk = join(home, 'disk.qcow2');
    copyFileSync(await qemuCreate('glance-import-cli-32m.qcow2', 'qcow2', '32M'), disk);
    bytes = readFileSync(disk);
    files = createServer((req, res) => {
      if (req.url === '/disk.qcow2') {
        res.writeHead(200, { 'content-length': String(bytes.length) });
        res.end(bytes);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
    filesUrl = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
    s = await startTestServer({ env: { IMAGO_MD5: '1', IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
    const admin = async (method: string, path: string, body: unknown) => {
      const r = await fetch(`${s.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const text = await r.text();
      assert.ok(r.ok, `${path}: ${r.status} ${text}`);
      return JSON.parse(text) as Record<string, string>;
    };
    await admin('POST', '/api/v1/projects', { name: 'demo' });
    await admin('PUT', '/api/v1/projects/demo/quota', { images: 20 });
    token = (await admin('POST', '/api/v1/tokens', { name: 'cli', project: 'demo', role: 'writer', user: 'wendy' })).token!;
  });
  after(async () => {
    await s?.stop();
    await new Promise((r) => files?.close(r));
    rmSync(home, { recursive: true, force: true });
  });

  test('import-info, stores-info and usage', async () => {
    const info = flat(await glance('import-info'));
    assert.ok(info.includes('"value":["glancedirect","webdownload","copyimage"]'), info);
    const stores = await glance('stores-info');
    assert.match(stores, /"id": "default"/);
    assert.match(stores, /"default": "true"/);
    const usage = await glance('usage');
    assert.match(usage, /\|\s*image_count_total\s*\|\s*20\s*\|\s*\d+\s*\|/);
    assert.match(usage, /\|\s*image_size_total\s*\|\s*-1\s*\|\s*\d+\s*\|/);
  });

  test('image-create-via-import with glance-direct (--file): staged, imported, active, byte-identical; image-tasks shows the task', async () => {
    const out = await glance(
      'image-create-via-import',
      '--name',
      'direct',
      '--disk-format',
      'qcow2',
      '--container-format',
      'bare',
      '--import-method',
      'glance-direct',
      '--file',
      disk,
    );
    const f = fields(out);
    assert.match(f.id!, /^[0-9a-f-]{36}$/);
    const shown = await activeAndIdentical(f.id!);
    assert.equal(shown.os_glance_importing_to_stores, '');
    assert.equal(shown.stores, 'default');
    const tasks = await glance('--verbose', 'image-tasks', f.id!);
    assert.match(tasks, /success/);
    assert.match(tasks, /glance-direct/);
  });

  test('image-create-via-import with web-download (--uri) from 127.0.0.1', async () => {
    const out = await glance(
      'image-create-via-import',
      '--name',
      'web',
      '--disk-format',
      'qcow2',
      '--container-format',
      'bare',
      '--import-method',
      'web-download',
      '--uri',
      `${filesUrl}/disk.qcow2`,
    );
    await activeAndIdentical(fields(out).id!);
  });

  test('image-create, image-stage, image-import step by step; a hostile stage is refused and the image killed', async () => {
    const id = fields(await glance('image-create', '--name', 'steps', '--disk-format', 'qcow2', '--container-format', 'bare')).id!;
    await glance('image-stage', '--file', disk, id);
    assert.equal(fields(await glance('image-show', id)).status, 'uploading');
    await glance('image-import', '--import-method', 'glance-direct', id);
    await activeAndIdentical(id);
    // glanceclient checks the status itself (from image-show) before it asks the server
    assert.match(await glanceFails('image-import', '--import-method', 'glance-direct', id), /only be applied to an image in status 'uploading'/);

    const base = await qemuCreate('glance-import-cli-base.qcow2', 'qcow2', '16M');
    const overlay = await qemuCreate('glance-import-cli-overlay.qcow2', 'qcow2', '16M', [`backing_file=${base}`, 'backing_fmt=qcow2']);
    const bad = fields(await glance('image-create', '--name', 'hostile', '--disk-format', 'qcow2', '--container-format', 'bare')).id!;
    assert.match(await glanceFails('image-stage', '--file', overlay, bad), /BACKING_FILE/);
    assert.equal(fields(await glance('image-show', bad)).status, 'killed');
  });

  test('task-list and task-show as a server administrator; refused to a project writer', async () => {
    const list = await glanceAs(s.token, 'task-list');
    const ids = [...list.matchAll(/\|\s*([0-9a-f-]{36})\s*\|\s*api_image_import\s*\|\s*success\s*\|\s*demo\s*\|/g)].map((m) => m[1]!);
    assert.ok(ids.length >= 3, list);
    const shown = fields(await glanceAs(s.token, 'task-show', ids[0]!));
    assert.equal(shown.status, 'success');
    assert.equal(shown.type, 'api_image_import');
    assert.equal(shown.owner, 'demo');
    assert.match(shown.input!, /import_req/);
    assert.match(await glanceFails('task-list'), /403|[Ff]orbidden/);
  });
});
