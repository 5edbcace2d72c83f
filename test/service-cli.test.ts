/**
 * The remote CLI verbs and the watch stream against a real server: `imago image create --file`,
 * `list`, `show`, `download`, `get -w` (Deckhouse-style rows from server-sent events), and the
 * OpenAPI document generated from the route schemas.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { patternedRaw, qemuConvert } from './support/qemu.js';
import { adminFetch as fetch, startTestServer, type TestServer } from './support/server.js';

const BIN = join(import.meta.dirname, '..', 'bin', 'imago.js');
let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s?.stop();
});

/** Runs the real CLI asynchronously: the server under test lives in this process's event loop. */
function imago(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args, '--server', s.url, '--data', s.dataDir], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('imago image create --file uploads; list/show/download round-trip byte-identical', async () => {
  const file = await qemuConvert('cli-svc.qcow2', await patternedRaw('svc-src-8m.raw', 8 << 20), 'qcow2');
  const c = await imago('image', 'create', '--name', 'cli-img', '--type', 'OS', '--tag', 'a', '--property', 'os_distro=ubuntu', '--file', file, '-o', 'json');
  assert.equal(c.code, 0, c.stderr);
  const img = JSON.parse(c.stdout);
  assert.equal(img.state, 'ready');
  assert.equal(img.virtualSize, 8 << 20);
  const list = await imago('image', 'list', '--tag', 'a');
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^ID\s+NAME\s+PROJECT\s+VISIBILITY\s+STATE\s+FORMAT\s+VIRTUAL\s+STORED\s+AGE/);
  assert.match(list.stdout, /cli-img\s+\(cluster\)\s+private\s+ready\s+qcow2\s+8 MiB/);
  const show = await imago('image', 'show', 'cli-img');
  assert.match(show.stdout, /active \/ READY \/ Ready/);
  const out = join(mkdtempSync(join(tmpdir(), 'imago-dl-')), 'x.qcow2');
  const dl = await imago('image', 'download', 'cli-img', '-O', out);
  assert.equal(dl.code, 0, dl.stderr);
  const h = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  assert.equal(h(readFileSync(out)), h(readFileSync(file)));
  const missing = await imago('image', 'show', 'no-such-image');
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no image with id or name "no-such-image"/);
});

test('a refused upload through the CLI exits 1 and explains', async () => {
  const { qemuCreate } = await import('./support/qemu.js');
  const file = await qemuCreate('svc-64m.qcow2', 'qcow2', '64M');
  const r = await imago('image', 'create', '--name', 'lie', '--disk-format', 'raw', '--file', file);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /declared as raw but its bytes are qcow2/);
});

test('imago image get NAME -w prints a Deckhouse-style row per change', async () => {
  const file = readFileSync(await patternedRaw('crash-16m.raw', 16 << 20));
  const created = (await (await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'watched' }) })).json()) as { id: string };
  const w = spawn(process.execPath, [BIN, 'image', 'get', 'watched', '-w', '--server', s.url, '--data', s.dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  w.stdout.on('data', (d) => (out += d));
  try {
    for (let i = 0; i < 100 && !out.includes('WaitForUserUpload'); i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200)); // the watcher subscribes after printing the first row
    let off = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (off >= file.length) return ctrl.close();
        await new Promise((r) => setTimeout(r, 60));
        ctrl.enqueue(file.subarray(off, off + (1 << 20)));
        off += 1 << 20;
      },
    });
    const up = await fetch(`${s.url}/api/v1/images/${created.id}/file`, {
      method: 'PUT',
      body,
      duplex: 'half',
      headers: { 'content-type': 'application/octet-stream', 'x-image-size': String(file.length) },
    } as RequestInit);
    assert.equal(up.status, 200);
    for (let i = 0; i < 100 && !/watched\s+Ready/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
  } finally {
    w.kill();
  }
  const lines = out.trim().split('\n');
  assert.match(lines[0]!, /^NAME\s+PHASE\s+PROGRESS\s+STOREDSIZE\s+UNPACKEDSIZE\s+AGE$/);
  assert.match(lines[1]!, /^watched\s+WaitForUserUpload/);
  assert.ok(lines.some((l) => /^watched\s+Provisioning\s+\d+%/.test(l)), out);
  assert.ok(lines.some((l) => /^watched\s+Ready\s+100%\s+16 MiB\s+16 MiB/.test(l)), out);
});

test('the OpenAPI document describes the routes, and errors share one problem+json shape', async () => {
  const doc = (await (await fetch(`${s.url}/api/v1/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, any>> };
  assert.equal(doc.openapi, '3.1.0');
  for (const p of ['/api/v1/images', '/api/v1/images/{id}', '/api/v1/images/{id}/file', '/api/v1/events']) assert.ok(doc.paths[p], p);
  assert.ok(doc.paths['/api/v1/images']!.post.responses['201']);
  assert.ok(doc.paths['/api/v1/images']!.get.parameters.some((x: { name: string }) => x.name === 'cursor'));
  assert.ok(doc.paths['/api/v1/images/{id}/file']!.put.requestBody.content['application/octet-stream']);
  for (const [url, init, status, code] of [
    [`${s.url}/api/v1/images/nope`, {}, 404, 'IMAGE_NOT_FOUND'],
    [`${s.url}/api/v1/nowhere`, {}, 404, 'NOT_FOUND'],
    [`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":' }, 400, 'INVALID_REQUEST'],
    [`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '[]' }, 400, 'INVALID_REQUEST'],
  ] as const) {
    const r = await fetch(url, init as RequestInit);
    assert.equal(r.status, status, url);
    assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
    const p = (await r.json()) as Record<string, unknown>;
    assert.equal(p.code, code);
    for (const k of ['type', 'title', 'status', 'detail', 'requestId']) assert.ok(k in p, k);
  }
});

test('size limits: an announced size over the limit is refused before the body is read', async () => {
  const small = await startTestServer({ env: { IMAGO_MAX_IMAGE_SIZE: '1M' } });
  try {
    const img = (await (await fetch(`${small.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"big"}' })).json()) as { id: string };
    const r = await fetch(`${small.url}/api/v1/images/${img.id}/file`, { method: 'PUT', body: new Uint8Array(2 << 20), headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(r.status, 413);
    const p = (await r.json()) as { code: string; detail: string };
    assert.equal(p.code, 'SIZE_LIMIT');
    assert.match(p.detail, /1048576-byte limit/);
    // no announced size (chunked): refused when the bytes pass the limit
    const img2 = (await (await fetch(`${small.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"big2"}' })).json()) as { id: string };
    const chunks = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 4; i++) c.enqueue(new Uint8Array(512 << 10).fill(7));
        c.close();
      },
    });
    const r2 = await fetch(`${small.url}/api/v1/images/${img2.id}/file`, { method: 'PUT', body: chunks, duplex: 'half', headers: { 'content-type': 'application/octet-stream' } } as RequestInit);
    assert.equal(r2.status, 413);
    const st = (await (await fetch(`${small.url}/api/v1/images/${img2.id}`)).json()) as { state: string; stateReason: string };
    assert.equal(st.state, 'error');
    assert.match(st.stateReason, /limit/);
  } finally {
    await small.stop();
  }
});

test('imago gc --check reports what an unreferenced blob would free; imago gc frees it', async () => {
  const file = readFileSync(await patternedRaw('svc-gc-3m.raw', 3 << 20));
  const created = (await (await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"gc-me"}' })).json()) as { id: string };
  const up = await fetch(`${s.url}/api/v1/images/${created.id}/file`, { method: 'PUT', body: file, headers: { 'content-type': 'application/octet-stream' } });
  const digest = ((await up.json()) as { digest: string }).digest;
  assert.equal((await fetch(`${s.url}/api/v1/images/${created.id}`, { method: 'DELETE' })).status, 204);
  const run = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [BIN, 'gc', ...args, '--data', s.dataDir], { env: { ...process.env, IMAGO_GC_GRACE_MS: '0' } }, (err, stdout, stderr) =>
        resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
  const check = await run('--check', '--json');
  assert.equal(check.code, 0, check.stderr);
  const plan = JSON.parse(check.stdout) as { reclaimableBytes: number; youngBytes: number; candidates: { digest: string }[]; totalBytes: number; usedBytes: number };
  assert.ok(plan.candidates.some((c) => c.digest === digest));
  assert.ok(plan.reclaimableBytes >= 3 << 20);
  assert.equal(plan.totalBytes, plan.usedBytes + plan.reclaimableBytes + plan.youngBytes);
  const human = await run('--check');
  assert.match(human.stdout, /reclaimable:\s+\S+/);
  assert.match(human.stdout, new RegExp(`would delete ${digest}`));
  const real = await run();
  assert.equal(real.code, 0, real.stderr);
  assert.match(real.stdout, /deleted \d+ blob/);
  assert.equal(await s.app.store.stat(digest as `sha256:${string}`), undefined);
});
