/**
 * The remote CLI verbs and the watch stream against a real server: `imago image create --file`,
 * `list`, `show`, `download` (also converted by the server), `import` (waiting, with progress),
 * `get -w` (Deckhouse-style rows from server-sent events), `gc --check`, and the OpenAPI document
 * generated from the route schemas.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { cached, patternedRaw, qemuConvert, qemuCreate, qemuInfo, sh } from './support/qemu.js';
import { adminFetch as fetch, startTestServer, type TestServer } from './support/server.js';

const BIN = join(import.meta.dirname, '..', 'bin', 'imago.js');
let s: TestServer;
/** A local HTTP server URL imports read from; `/slow/...` sends the body over about a second. */
let files: http.Server;
let filesUrl = '';
const bodies = new Map<string, Buffer>();
before(async () => {
  files = http.createServer((req, res) => {
    const slow = req.url?.startsWith('/slow/') === true;
    const b = bodies.get(slow ? req.url!.slice('/slow'.length) : (req.url ?? ''));
    if (!b) return res.writeHead(404).end();
    res.writeHead(200, { 'content-length': b.length });
    if (!slow) return res.end(b);
    let off = 0;
    const step = Math.ceil(b.length / 10);
    const t = setInterval(() => {
      res.write(b.subarray(off, off + step));
      off += step;
      if (off >= b.length) {
        clearInterval(t);
        res.end();
      }
    }, 100);
    res.on('close', () => clearInterval(t));
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  s = await startTestServer({ env: { IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
});
after(async () => {
  await s?.stop();
  files?.closeAllConnections();
  await new Promise((r) => files?.close(r));
});

async function imagesNamed(name: string): Promise<{ id: string; state: string }[]> {
  return ((await (await fetch(`${s.url}/api/v1/images?name=${encodeURIComponent(name)}`)).json()) as { images: { id: string; state: string }[] }).images;
}

/** An unexpected error is one line, never a stack trace. */
function assertOneLine(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at /m, stderr);
  assert.equal(stderr.trim().split('\n').length, 1, stderr);
}

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
  // the image this command created stored nothing: it is not left behind in `error`
  assert.match(r.stderr, /the new image "lie" stored nothing and was removed/);
  assert.deepEqual(await imagesNamed('lie'), []);
});

test('image create --file checks the file before creating anything: missing, a directory, empty', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-cli-file-'));
  const empty = join(dir, 'empty.raw');
  writeFileSync(empty, '');
  for (const [file, why] of [
    [join(dir, 'nonexistent.qcow2'), /no such file/],
    [dir, /it is a directory/],
    [empty, /it is empty \(0 bytes\)/],
  ] as const) {
    const r = await imago('image', 'create', '--name', 'never-made', '--file', file);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^imago: cannot upload "${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}": `));
    assert.match(r.stderr, why);
    assertOneLine(r.stderr);
    const up = await imago('image', 'upload', 'cli-img', file);
    assert.equal(up.code, 2, up.stderr);
    assert.match(up.stderr, why);
  }
  assert.deepEqual(await imagesNamed('never-made'), [], 'no pending image is left behind');
});

test('image import waits with a progress bar until ready; --no-wait returns at once; a refused import exits 1 with the reason', async () => {
  bodies.set('/disk.qcow2', readFileSync(await qemuConvert('cli-imp.qcow2', await patternedRaw('svc-src-8m.raw', 8 << 20), 'qcow2')));
  const base = await qemuCreate('cli-imp-base.qcow2', 'qcow2', '64M');
  const overlay = await cached('cli-imp-overlay.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]);
  });
  bodies.set('/evil.qcow2', readFileSync(overlay));

  const created = JSON.parse((await imago('image', 'create', '--name', 'imp-wait', '-o', 'json')).stdout) as { id: string };
  const r = await imago('image', 'import', created.id, `${filesUrl}/slow/disk.qcow2`, '-o', 'json');
  assert.equal(r.code, 0, r.stderr);
  const img = JSON.parse(r.stdout) as { state: string; diskFormat: string; virtualSize: number };
  assert.equal(img.state, 'ready', 'the command returns when the import is done, not when it started');
  assert.equal(img.diskFormat, 'qcow2');
  assert.equal(img.virtualSize, 8 << 20);

  // on a terminal the wait shows a progress bar (script(1) gives the command a pty)
  const tty = JSON.parse((await imago('image', 'create', '--name', 'imp-tty', '-o', 'json')).stdout) as { id: string };
  const cmd = [process.execPath, BIN, 'image', 'import', tty.id, `${filesUrl}/slow/disk.qcow2`, '--server', s.url, '--data', s.dataDir]
    .map((a) => `'${a}'`)
    .join(' ');
  const shown = await new Promise<string>((resolve) => execFile('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8' }, (_e, stdout) => resolve(stdout)));
  assert.match(shown, /import imp-tty \[#*-*\]\s+\d+% importing/, shown);
  assert.match(shown, /import imp-tty \[#{30}\] 100% ready/, shown);

  const nw = JSON.parse((await imago('image', 'create', '--name', 'imp-nowait', '-o', 'json')).stdout) as { id: string };
  const quick = await imago('image', 'import', nw.id, `${filesUrl}/slow/disk.qcow2`, '--no-wait', '-o', 'json');
  assert.equal(quick.code, 0, quick.stderr);
  assert.equal((JSON.parse(quick.stdout) as { state: string }).state, 'importing');

  const evil = JSON.parse((await imago('image', 'create', '--name', 'imp-evil', '-o', 'json')).stdout) as { id: string };
  const refused = await imago('image', 'import', evil.id, `${filesUrl}/evil.qcow2`);
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /^imago: the import of "imp-evil" failed: .*backing/);
  assertOneLine(refused.stderr);

  // create --url waits the same way; a failed first import leaves no image behind
  const made = await imago('image', 'create', '--name', 'imp-create', '--url', `${filesUrl}/disk.qcow2`, '-o', 'json');
  assert.equal(made.code, 0, made.stderr);
  assert.equal((JSON.parse(made.stdout) as { state: string }).state, 'ready');
  const gone = await imago('image', 'create', '--name', 'imp-create-404', '--url', `${filesUrl}/missing.qcow2`);
  assert.equal(gone.code, 2, gone.stdout + gone.stderr);
  assert.match(gone.stderr, /failed: .*404/);
  assert.deepEqual(await imagesNamed('imp-create-404'), []);
});

test('image import keeps waiting when a proxy cuts its event stream', async () => {
  bodies.set('/disk.qcow2', readFileSync(await qemuConvert('cli-imp.qcow2', await patternedRaw('svc-src-8m.raw', 8 << 20), 'qcow2')));
  // a reverse proxy that ends every event stream after 300 ms, as a proxy's read timeout would
  const proxy = http.createServer((req, res) => {
    const target = new URL(s.url);
    const up = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers, agent: false }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
      if (req.url?.startsWith('/api/v1/events')) {
        setTimeout(() => {
          res.destroy();
          up.destroy();
        }, 300);
      }
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  try {
    const created = JSON.parse((await imago('image', 'create', '--name', 'imp-proxy', '-o', 'json')).stdout) as { id: string };
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        [BIN, 'image', 'import', created.id, `${filesUrl}/slow/disk.qcow2`, '-o', 'json', '--server', proxyUrl, '--data', s.dataDir],
        { encoding: 'utf8' },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { state: string }).state, 'ready', 'the wait outlived the cut streams');
  } finally {
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(r));
  }
});

test('image download --format converts on the server (checked with qemu-img info)', async () => {
  const file = await qemuConvert('cli-dl-src.qcow2', await patternedRaw('svc-src-8m.raw', 8 << 20), 'qcow2');
  const c = await imago('image', 'create', '--name', 'dl-conv', '--file', file, '-o', 'json');
  assert.equal(c.code, 0, c.stderr);
  const dir = mkdtempSync(join(tmpdir(), 'imago-dl-'));
  const vmdk = join(dir, 'x.vmdk');
  const r = await imago('image', 'download', 'dl-conv', '-O', vmdk, '--format', 'vmdk', '--subformat', 'streamOptimized');
  assert.equal(r.code, 0, r.stderr);
  const info = await qemuInfo(vmdk);
  assert.equal(info.format, 'vmdk');
  assert.equal(info['virtual-size'], 8 << 20);
  assert.equal((info['format-specific']?.data as { 'create-type'?: string })['create-type'], 'streamOptimized');
  await sh('qemu-img', ['compare', '-q', file, vmdk]);
  const vhd = join(dir, 'x.vhd');
  const v = await imago('image', 'download', 'dl-conv', '-O', vhd, '--format', 'vhd', '--subformat', 'fixed');
  assert.equal(v.code, 0, v.stderr);
  assert.equal((await qemuInfo(vhd, 'vpc')).format, 'vpc');
  await sh('qemu-img', ['compare', '-q', '-F', 'vpc', file, vhd]);
  const bad = await imago('image', 'download', 'dl-conv', '-O', join(dir, 'x.bin'), '--format', 'nonsense');
  assert.equal(bad.code, 2, bad.stderr);
  assertOneLine(bad.stderr);
});

test('imago image get NAME -w prints a Deckhouse-style row per change', async () => {
  const file = readFileSync(await patternedRaw('crash-16m.raw', 16 << 20));
  const created = (await (
    await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'watched' }) })
  ).json()) as { id: string };
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
  assert.ok(
    lines.some((l) => /^watched\s+Provisioning\s+\d+%/.test(l)),
    out,
  );
  assert.ok(
    lines.some((l) => /^watched\s+Ready\s+100%\s+16 MiB\s+16 MiB/.test(l)),
    out,
  );
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
    const img = (await (
      await fetch(`${small.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"big"}' })
    ).json()) as { id: string };
    const r = await fetch(`${small.url}/api/v1/images/${img.id}/file`, {
      method: 'PUT',
      body: new Uint8Array(2 << 20),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(r.status, 413);
    const p = (await r.json()) as { code: string; detail: string };
    assert.equal(p.code, 'SIZE_LIMIT');
    assert.match(p.detail, /1048576-byte limit/);
    // no announced size (chunked): refused when the bytes pass the limit
    const img2 = (await (
      await fetch(`${small.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"big2"}' })
    ).json()) as { id: string };
    const chunks = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 4; i++) c.enqueue(new Uint8Array(512 << 10).fill(7));
        c.close();
      },
    });
    const r2 = await fetch(`${small.url}/api/v1/images/${img2.id}/file`, {
      method: 'PUT',
      body: chunks,
      duplex: 'half',
      headers: { 'content-type': 'application/octet-stream' },
    } as RequestInit);
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
  const created = (await (
    await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"gc-me"}' })
  ).json()) as { id: string };
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
  const plan = JSON.parse(check.stdout) as {
    reclaimableBytes: number;
    youngBytes: number;
    candidates: { digest: string }[];
    totalBytes: number;
    usedBytes: number;
  };
  assert.ok(plan.candidates.some((c) => c.digest === digest));
  assert.ok(plan.reclaimableBytes >= 3 << 20);
  assert.equal(plan.totalBytes, plan.usedBytes + plan.reclaimableBytes + plan.youngBytes);
  const human = await run('--check');
  assert.match(human.stdout, /reclaimable:\s+\S+/);
  assert.match(human.stdout, /held back:\s+0 B \(0 bytes\) by the 0s grace period/);
  assert.match(human.stdout, new RegExp(`would delete ${digest}`));
  const real = await run();
  assert.equal(real.code, 0, real.stderr);
  assert.match(real.stdout, /deleted \d+ blob/);
  assert.equal(await s.app.store.stat(digest as `sha256:${string}`), undefined);
});

test('imago gc --check shows the bytes the grace period holds back and when they become reclaimable', async () => {
  const file = readFileSync(await patternedRaw('svc-gc-young-3m.raw', 3 << 20));
  file[100] = 42; // not shared with other tests' images
  const created = (await (
    await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"gc-young"}' })
  ).json()) as { id: string };
  const up = await fetch(`${s.url}/api/v1/images/${created.id}/file`, { method: 'PUT', body: file, headers: { 'content-type': 'application/octet-stream' } });
  const digest = ((await up.json()) as { digest: string }).digest;
  assert.equal((await fetch(`${s.url}/api/v1/images/${created.id}`, { method: 'DELETE' })).status, 204);
  const run = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        [BIN, 'gc', '--check', ...args, '--data', s.dataDir],
        { env: { ...process.env, IMAGO_GC_GRACE_MS: '3600000' } },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
  const before = Date.now();
  const human = await run();
  assert.equal(human.code, 0, human.stderr);
  assert.doesNotMatch(human.stdout, new RegExp(`would delete ${digest}`));
  const held = /held back:\s+(\S+ \S+) \((\d+) bytes\) by the 1h grace period/.exec(human.stdout);
  assert.ok(held, human.stdout);
  assert.ok(Number(held[2]) >= 3 << 20, human.stdout);
  const when = /reclaimable from (\S+) \(in (\d+m\d+s|1h)\)/.exec(human.stdout);
  assert.ok(when, human.stdout);
  const at = Date.parse(when[1]!);
  assert.ok(at > before + 3500_000 && at <= Date.now() + 3601_000, when[1]);
  const json = JSON.parse((await run('--json')).stdout) as { youngBytes: number; graceMs: number; youngReclaimableBy: string };
  assert.equal(json.graceMs, 3600_000);
  assert.ok(json.youngBytes >= 3 << 20);
  assert.ok(Date.parse(json.youngReclaimableBy) >= at - 1000);
});
