/**
 * Soak: random damaged and hostile images through every door at once — upload (whole, or dropped
 * half-way), URL import from a loopback server (that sometimes drops the connection), `?format=`
 * downloads of whatever got stored, and the local `imago convert` CLI — for a bounded time
 * (IMAGO_SOAK_SECONDS, default 25), several clients in parallel. The real `imago serve` runs as a
 * child process; the test asserts that it never exits, that no request gets a 5xx, that its
 * resident memory stays bounded, and that it is consistent afterwards (nothing left importing,
 * every ready image downloads to its digest). The random choices come from IMAGO_SOAK_SEED
 * (printed), so a failure can be replayed.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { patternBytes } from './support/disk-oracle.js';
import { cached, sh } from './support/qemu.js';
import { adminFetch as fetch } from './support/server.js';
import { BIN, spawnServer, type SpawnedServer } from './support/spawned-server.js';
import { seededRandom } from './support/prng.js';

const exec = promisify(execFile);
const SECONDS = Number(process.env.IMAGO_SOAK_SECONDS ?? 25);
const SEED = Number(process.env.IMAGO_SOAK_SEED ?? Date.now() % 1_000_000);
const CLIENTS = 4;
/** resident-memory bound for the whole run (the decoder bound of issue 18 is 250 MiB for 10 bombs) */
const RSS_BOUND_MIB = 300;
const MiB = 1024 * 1024;

const work = mkdtempSync(join(tmpdir(), 'imago-soak-'));
after(() => rmSync(work, { recursive: true, force: true }));

const random = seededRandom(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
const int = (n: number) => Math.floor(random() * n);

interface Sample {
  name: string;
  bytes: Buffer;
}
const clean: Sample[] = [];
const hostile: Sample[] = [];

before(async () => {
  // a 6 MiB raw with data in several places, and every format qemu-img writes from it
  const raw = join(work, 'base.raw');
  const data = Buffer.alloc(6 * MiB);
  for (const at of [0, 1, 3, 5]) patternBytes(512 * 1024, at + 1).copy(data, at * MiB);
  writeFileSync(raw, data);
  clean.push({ name: 'raw', bytes: data });
  const targets: [string, string, string[]][] = [
    ['qcow2', 'qcow2', []],
    ['qcow2-zlib', 'qcow2', ['-c']],
    ['vmdk', 'vmdk', []],
    ['vmdk-stream', 'vmdk', ['-o', 'subformat=streamOptimized']],
    ['vhd', 'vpc', []],
    ['vhdx', 'vhdx', []],
    ['vdi', 'vdi', []],
  ];
  for (const [name, fmt, opts] of targets) {
    const out = join(work, `base.${name}`);
    await sh('qemu-img', ['convert', '-q', '-O', fmt, ...opts, raw, out]);
    clean.push({ name, bytes: readFileSync(out) });
  }
  // hostile on purpose: a backing file, and compression bombs of every codec
  const backed = join(work, 'backed.qcow2');
  await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', raw, '-F', 'raw', backed]);
  hostile.push({ name: 'backing-file', bytes: readFileSync(backed) });
  for (const [codec, cmd] of [
    ['gz', 'gzip -c'],
    ['zst', 'zstd -q -c'],
    ['xz', 'xz -0 -c -T1'],
    ['bz2', 'bzip2 -c'],
  ] as const) {
    const out = await cached(`zeros-1g.${codec}`, (tmp) =>
      exec('bash', ['-c', `head -c ${1024 * MiB} /dev/zero | ${cmd} > ${tmp}`], { maxBuffer: MiB }).then(() => undefined),
    );
    hostile.push({ name: `bomb-${codec}`, bytes: readFileSync(out) });
  }
});

/** A random damage of a clean image: truncation, bytes flipped in the metadata, tables overwritten. */
function damaged(): Sample {
  const base = pick(clean);
  const b = Buffer.from(base.bytes);
  switch (int(4)) {
    case 0: {
      const at = int(Math.min(b.length, 2 * MiB));
      return { name: `${base.name}-cut@${at}`, bytes: b.subarray(0, at) };
    }
    case 1: {
      for (let i = 0; i < 16; i++) b[int(Math.min(b.length, 256 * 1024))] = int(256);
      return { name: `${base.name}-flipped`, bytes: b };
    }
    case 2: {
      const at = int(Math.min(b.length - 8, 512 * 1024));
      b.fill(0xff, at, at + 8);
      return { name: `${base.name}-ff@${at}`, bytes: b };
    }
    default: {
      const at = int(b.length - 4096);
      b.fill(0x5a, at, at + 4096);
      return { name: `${base.name}-smashed@${at}`, bytes: b };
    }
  }
}

function anySample(): Sample {
  const r = random();
  if (r < 0.5) return damaged();
  if (r < 0.8) return pick(clean);
  return pick(hostile);
}

/** The loopback source of URL imports: serves samples by name, sometimes drops the connection half-way. */
const served = new Map<string, Buffer>();
let source: Server;
let sourceUrl = '';
before(async () => {
  source = createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').slice(1).split('?')[0]!);
    const body = served.get(name.replace(/^drop\//, ''));
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': String(body.length), 'content-type': 'application/octet-stream' });
    if (name.startsWith('drop/')) {
      res.write(body.subarray(0, Math.floor(body.length / 2)));
      setTimeout(() => res.destroy(), 20);
      return;
    }
    res.end(body);
  });
  await new Promise<void>((r) => source.listen(0, '127.0.0.1', r));
  const a = source.address();
  sourceUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});
after(() => source?.close());

const statuses = new Map<string, number>();
const serverErrors: string[] = [];
function record(door: string, status: number, what: string): void {
  const key = `${door} ${status}`;
  statuses.set(key, (statuses.get(key) ?? 0) + 1);
  if (status >= 500) serverErrors.push(`${door} ${what}: HTTP ${status}`);
}

async function create(s: SpawnedServer, name: string, diskFormat?: string): Promise<string> {
  const body: Record<string, unknown> = { name };
  if (diskFormat) body.diskFormat = diskFormat;
  const r = await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  record('create', r.status, name);
  const j = (await r.json()) as { id: string };
  return j.id;
}

async function doorUpload(s: SpawnedServer): Promise<void> {
  const sample = anySample();
  const claim = random() < 0.3 ? pick(['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi']) : undefined;
  const id = await create(s, `up-${sample.name}`, claim);
  const dropHalfway = random() < 0.2;
  const ac = new AbortController();
  let body: Uint8Array | ReadableStream<Uint8Array> = sample.bytes;
  if (dropHalfway) {
    const half = sample.bytes.subarray(0, Math.floor(sample.bytes.length / 2));
    body = new ReadableStream<Uint8Array>({
      start(ctrl) {
        ctrl.enqueue(half);
        setTimeout(() => ac.abort(), 30);
      },
    });
  }
  try {
    const r = await fetch(`${s.url}/api/v1/images/${id}/file`, {
      method: 'PUT',
      body,
      signal: ac.signal,
      duplex: 'half',
      headers: { 'content-type': 'application/octet-stream' },
    } as RequestInit);
    await r.arrayBuffer();
    record('upload', r.status, sample.name);
  } catch (e) {
    if (!dropHalfway) throw e;
  }
}

async function doorImport(s: SpawnedServer): Promise<void> {
  const sample = anySample();
  const key = `${sample.name}-${int(1e9)}`;
  served.set(key, sample.bytes);
  const id = await create(s, `imp-${sample.name}`);
  const path = random() < 0.2 ? `drop/${key}` : key;
  const r = await fetch(`${s.url}/api/v1/images/${id}/import`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ url: `${sourceUrl}/${encodeURIComponent(path).replace('%2F', '/')}` }),
  });
  record('import', r.status, sample.name);
  await r.arrayBuffer();
  // wait (bounded) for the job to settle, so imports do not pile up past the run
  for (let i = 0; i < 100; i++) {
    const st = (await (await fetch(`${s.url}/api/v1/images/${id}`)).json()) as { state: string };
    if (st.state !== 'importing' && st.state !== 'pending') break;
    await new Promise((res) => setTimeout(res, 50));
  }
  served.delete(key);
}

async function doorVariant(s: SpawnedServer): Promise<void> {
  const list = (await (await fetch(`${s.url}/api/v1/images?state=ready&limit=200`)).json()) as { images: { id: string; name: string }[] };
  if (list.images.length === 0) return;
  const img = pick(list.images);
  const fmt = pick(['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi']);
  try {
    const r = await fetch(`${s.url}/api/v1/images/${img.id}/file?format=${fmt}`);
    record('variant', r.status, `${img.name} → ${fmt}`);
    await r.arrayBuffer();
  } catch {
    // an aborted transfer is a legitimate answer to a source that turns out damaged mid-way
    record('variant', 0, `${img.name} → ${fmt} (aborted)`);
  }
}

async function doorConvertCli(): Promise<void> {
  const sample = anySample();
  const dir = join(work, `cli-${int(1e9)}`);
  mkdirSync(dir);
  const input = join(dir, 'in.img');
  writeFileSync(input, sample.bytes);
  const fmt = pick(['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'vdi']);
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [BIN, 'convert', '-O', fmt, input, join(dir, 'out.img')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (c) => resolve({ code: c, stderr: err }));
  });
  rmSync(dir, { recursive: true, force: true });
  assert.ok(code === 0 || code === 1 || code === 2, `imago convert -O ${fmt} on ${sample.name} exited ${code}: ${stderr}`);
  assert.doesNotMatch(stderr, /\n\s+at .+:\d+:\d+\)?\n/, `imago convert -O ${fmt} on ${sample.name} printed a stack trace: ${stderr}`);
  statuses.set(`convert-cli exit ${code}`, (statuses.get(`convert-cli exit ${code}`) ?? 0) + 1);
}

test(`soak: damaged and hostile images through every door for ${SECONDS} s (seed ${SEED})`, { timeout: (SECONDS + 180) * 1000 }, async () => {
  const dataDir = join(work, 'data');
  const s = await spawnServer(dataDir, { args: ['--import-allow', '127.0.0.1'] });
  let peakRssKiB = 0;
  const sampler = setInterval(() => {
    if (s.alive()) peakRssKiB = Math.max(peakRssKiB, s.memory().rssKiB);
  }, 200);
  try {
    const deadline = Date.now() + SECONDS * 1000;
    const doors = [doorUpload, doorImport, doorVariant, doorVariant, (_s: SpawnedServer) => doorConvertCli()] as const;
    let rounds = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (Date.now() < deadline) {
          await pick(doors)(s);
          rounds++;
          assert.ok(s.alive(), `imago serve exited during the soak (seed ${SEED}): ${s.stderr()}`);
        }
      }),
    );
    assert.ok(s.alive(), `imago serve exited (seed ${SEED}): ${s.stderr()}`);
    assert.deepEqual(serverErrors, [], `requests answered 5xx (seed ${SEED})`);
    // consistent afterwards: nothing stuck importing, every ready image downloads to its digest
    for (let i = 0; i < 100; i++) {
      const busy = (await (await fetch(`${s.url}/api/v1/images?state=importing&limit=10`)).json()) as { images: unknown[] };
      if (busy.images.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const all = (await (await fetch(`${s.url}/api/v1/images?limit=1000`)).json()) as { images: { id: string; name: string; state: string; digest?: string }[] };
    assert.ok(all.images.length > 0, 'the soak created images');
    for (const img of all.images) {
      assert.notEqual(img.state, 'importing', `${img.name} still importing after the soak`);
      if (img.state !== 'ready') continue;
      const got = createHash('sha256')
        .update(new Uint8Array(await (await fetch(`${s.url}/api/v1/images/${img.id}/file`)).arrayBuffer()))
        .digest('hex');
      assert.equal(`sha256:${got}`, img.digest, `ready image ${img.name} downloads to its digest`);
    }
    const { hwmKiB } = s.memory();
    const summary = [...statuses.entries()]
      .sort()
      .map(([k, n]) => `${k}: ${n}`)
      .join(', ');
    console.log(
      `soak seed ${SEED}: ${rounds} requests in ${SECONDS} s; peak RSS ${Math.round(peakRssKiB / 1024)} MiB (VmHWM ${Math.round(hwmKiB / 1024)} MiB); ${summary}`,
    );
    assert.ok(hwmKiB / 1024 < RSS_BOUND_MIB, `peak resident memory ${Math.round(hwmKiB / 1024)} MiB is over ${RSS_BOUND_MIB} MiB (seed ${SEED})`);
  } finally {
    clearInterval(sampler);
    await s.stop();
  }
});
