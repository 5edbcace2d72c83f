/**
 * Issue 18, item 1: no download can crash the server. Every reader format (raw, qcow2, vmdk, vdi,
 * vhd, vhdx; made by qemu-img from a raw with data) is damaged — truncated at several offsets,
 * table entries and data clusters pointed past the end of the file, random bytes over a table —
 * and stored as a `ready` image straight into the blob store and catalog (as a blob damaged after
 * ingest would be; ingest itself refuses most of these). Then every `?format=` writer is asked for.
 *
 * Each answer must be a 422 problem+json that names the problem, a transfer the client sees as
 * broken, or a complete body that is exactly what the server stored (digest checked): never a
 * cut-off body that ends like a whole one. After each request the server still answers healthz and
 * a normal download; a failed conversion leaves no variant row, and at the end no staging upload
 * or scratch file is left.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { openDatabase, type Database } from '../src/db/database.js';
import { KyselyImageRepository } from '../src/db/image-repository.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { spawnServer, type SpawnedServer } from './support/spawned-server.js';
import { cached, qemuConvert } from './support/qemu.js';
import { adminFetch as fetch } from './support/server.js';
import { storeReadyImage } from './support/stored-image.js';

const WRITERS = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi'] as const;
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const dataDir = mkdtempSync(join(tmpdir(), 'imago-damaged-'));
let s: SpawnedServer;
/** the catalog the child serves, read from here to check what it stored */
let db: Database;
let repo: KyselyImageRepository;
let goodId = '';
let goodBytes: Buffer;
/** the damaged images, stored before the server starts */
const cases: { format: string; damage: string; id: string }[] = [];

/** 4 MiB with a 64 KiB pattern every 192 KiB: many allocated clusters, grains and blocks. */
async function sourceRaw(): Promise<string> {
  return cached('dmg-src-4m.raw', async (tmp) => {
    const b = Buffer.alloc(4 << 20);
    for (let at = 0; at + (64 << 10) <= b.length; at += 192 << 10) for (let i = 0; i < 64 << 10; i++) b[at + i] = ((at >> 16) * 31 + i * 131 + 7) & 0xff || 1;
    writeFileSync(tmp, b);
  });
}

/** Deterministic bytes (xorshift32): the same damage every run. */
function noise(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

type Damage = { name: string; bytes: Buffer };

/** Truncations every format gets: inside the header, and at 30 %, 60 % and 95 % of the file. */
function truncations(b: Buffer): Damage[] {
  return [1000, Math.floor(b.length * 0.3), Math.floor(b.length * 0.6), Math.floor(b.length * 0.95)].map((n) => ({
    name: `truncated at ${n}`,
    bytes: Buffer.from(b.subarray(0, n)),
  }));
}

/** `b` with `at` overwritten by `patch`. */
function patched(b: Buffer, at: number, patch: Buffer): Buffer {
  const c = Buffer.from(b);
  patch.copy(c, at);
  return c;
}

const u64be = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const u64le = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const u32 = (n: number, le: boolean) => {
  const b = Buffer.alloc(4);
  if (le) b.writeUInt32LE(n);
  else b.writeUInt32BE(n);
  return b;
};

/** Index of the first 4- or 8-byte entry of a table for which `used` holds. */
function firstEntry(b: Buffer, table: number, count: number, size: 4 | 8, le: boolean, used: (v: bigint) => boolean): number {
  for (let i = 0; i < count; i++) {
    const at = table + i * size;
    const v = size === 8 ? (le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at)) : BigInt(le ? b.readUInt32LE(at) : b.readUInt32BE(at));
    if (used(v)) return at;
  }
  throw new Error('the fixture has no used table entry');
}

/** Table damage, from each format's own layout (offsets from its specification). */
function tableDamage(format: string, b: Buffer): Damage[] {
  switch (format) {
    case 'qcow2': {
      const cluster = 1 << b.readUInt32BE(20);
      const far = BigInt((Math.ceil(b.length / cluster) + 64) * cluster);
      const l1 = Number(b.readBigUInt64BE(40));
      const mask = 0x00ff_ffff_ffff_fe00n;
      const l2 = Number(b.readBigUInt64BE(l1) & mask);
      const entry = firstEntry(b, l2, cluster / 8, 8, false, (v) => (v & mask) !== 0n);
      const refcountTable = Number(b.readBigUInt64BE(48));
      return [
        { name: 'L1 entry past the end', bytes: patched(b, l1, u64be((1n << 63n) | far)) },
        { name: 'L2 data cluster past the end', bytes: patched(b, entry, u64be((1n << 63n) | far)) },
        { name: 'refcount table entry past the end', bytes: patched(b, refcountTable, u64be(far)) },
        { name: 'random bytes in the L2 table', bytes: patched(b, l2, noise(512, 0x51)) },
      ];
    }
    case 'vmdk': {
      const gd = Number(b.readBigUInt64LE(56)) * 512;
      const gt = b.readUInt32LE(gd) * 512;
      const far = Math.ceil(b.length / 512) + 4096;
      const entry = firstEntry(b, gt, 512, 4, true, (v) => v > 1n);
      return [
        { name: 'grain directory entry past the end', bytes: patched(b, gd, u32(far, true)) },
        { name: 'grain table entry past the end', bytes: patched(b, entry, u32(far, true)) },
        { name: 'random bytes in the grain table', bytes: patched(b, gt, noise(256, 0x33)) },
      ];
    }
    case 'vdi': {
      const map = b.readUInt32LE(0x154);
      const blocks = b.readUInt32LE(0x180);
      const entry = firstEntry(b, map, blocks, 4, true, (v) => v < 0xfffffffen);
      return [
        { name: 'block map entry past the end', bytes: patched(b, entry, u32(0x00ff_ffff, true)) },
        { name: 'random bytes in the block map', bytes: patched(b, map, noise(blocks * 4, 0x77)) },
      ];
    }
    case 'vhd': {
      const dyn = Number(b.readBigUInt64BE(16));
      const bat = Number(b.readBigUInt64BE(dyn + 16));
      const entries = b.readUInt32BE(dyn + 28);
      const entry = firstEntry(b, bat, entries, 4, false, (v) => v !== 0xffffffffn);
      return [
        { name: 'BAT entry past the end', bytes: patched(b, entry, u32(0x0fff_ffff, false)) },
        { name: 'random bytes in the BAT', bytes: patched(b, bat, noise(Math.min(64, entries * 4), 0x99)) },
      ];
    }
    case 'vhdx': {
      const regions = 0x30000;
      const count = b.readUInt32LE(regions + 8);
      const batGuid = Buffer.from('6677c22d23f600429d64115e9bfd4a08', 'hex');
      let bat = -1;
      for (let i = 0; i < count; i++) {
        const e = regions + 16 + i * 32;
        if (b.subarray(e, e + 16).equals(batGuid)) bat = Number(b.readBigUInt64LE(e + 16));
      }
      assert.ok(bat > 0, 'the vhdx fixture has a BAT region');
      const entry = firstEntry(b, bat, 64, 8, true, (v) => (v & 7n) === 6n || (v & 7n) === 7n);
      return [
        { name: 'BAT entry past the end', bytes: patched(b, entry, u64le((0x10_0000n << 20n) | 6n)) },
        { name: 'random bytes in the BAT', bytes: patched(b, bat, noise(64, 0xa5)) },
      ];
    }
    case 'qcow2-compressed': {
      // damage only reading the guest data shows: the headers are out before it is found
      const clusterBits = b.readUInt32BE(20);
      const l2 = Number(b.readBigUInt64BE(Number(b.readBigUInt64BE(40))) & 0x00ff_ffff_ffff_fe00n);
      const entry = firstEntry(b, l2, (1 << clusterBits) / 8, 8, false, (v) => (v & (1n << 62n)) !== 0n);
      const offset = Number(b.readBigUInt64BE(entry) & ((1n << BigInt(62 - (clusterBits - 8))) - 1n));
      return [{ name: 'garbage in a compressed cluster', bytes: patched(b, offset, noise(256, 0xc3)) }];
    }
    default:
      return [{ name: 'random bytes in the data', bytes: patched(b, 192 << 10, noise(4096, 0x11)) }];
  }
}

/** `kind` names the fixture; `format` is what ingest would have detected. */
async function sources(): Promise<{ kind: string; format: string; bytes: Buffer }[]> {
  const raw = await sourceRaw();
  const made: [string, string, string[]][] = [
    ['qcow2', 'qcow2', []],
    ['vmdk', 'vmdk', []],
    ['vdi', 'vdi', []],
    ['vhd', 'vpc', []],
    ['vhdx', 'vhdx', ['block_size=1048576']],
  ];
  const out = [{ kind: 'raw', format: 'raw', bytes: readFileSync(raw) }];
  for (const [format, qemu, options] of made)
    out.push({ kind: format, format, bytes: readFileSync(await qemuConvert(`dmg-src-4m.${format}`, raw, qemu, options)) });
  out.push({ kind: 'qcow2-compressed', format: 'qcow2', bytes: readFileSync(await qemuConvert('dmg-src-4m-c.qcow2', raw, 'qcow2', [], ['-c'])) });
  return out;
}

interface Outcome {
  status: number;
  headers: Headers;
  body?: Buffer;
  /** why reading the body failed: the client saw a broken transfer */
  broken?: string;
}

async function get(path: string): Promise<Outcome> {
  assert.equal(s.proc.exitCode, null, `the server process died before ${path}:\n${s.stderr().slice(-3000)}`);
  const res = await fetch(`${s.url}${path}`, { signal: AbortSignal.timeout(30_000) }).catch((e: Error) => {
    throw new Error(`GET ${path} got no answer (${e.message}); the server ${s.proc.exitCode === null ? 'is running' : 'died'}:\n${s.stderr().slice(-3000)}`);
  });
  try {
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  } catch (e) {
    const err = e as Error & { cause?: Error };
    assert.notEqual(err.name, 'TimeoutError', `${path}: the transfer hung instead of ending or breaking`);
    return { status: res.status, headers: res.headers, broken: err.cause?.message ?? err.message };
  }
}

/** The server still serves: liveness and a complete, correct download of an intact image. */
async function assertServing(context: string): Promise<void> {
  const h = await get('/api/v1/healthz');
  assert.equal(h.status, 200, `${context}: healthz after the request`);
  const d = await get(`/api/v1/images/${goodId}/file`);
  assert.equal(d.status, 200, `${context}: a normal download after the request`);
  assert.ok(d.body && d.body.equals(goodBytes), `${context}: the normal download is complete and intact`);
}

before(async () => {
  // the images go in through the composition root's own store and repository, then it is closed
  // and `imago serve` runs as its own process on the same data
  const app = await createApp(loadConfig({}, { IMAGO_DATA: dataDir }));
  try {
    goodBytes = readFileSync(await sourceRaw());
    goodId = (await storeReadyImage(app, goodBytes, 'raw', 'intact')).id;
    for (const src of await sources()) {
      for (const d of [...truncations(src.bytes), ...tableDamage(src.kind, src.bytes)]) {
        cases.push({ format: src.kind, damage: d.name, id: (await storeReadyImage(app, d.bytes, src.format, `${src.kind} ${d.name}`)).id });
      }
    }
  } finally {
    await app.close();
  }
  s = await spawnServer(dataDir);
  db = await openDatabase(loadConfig({}, { IMAGO_DATA: dataDir }).databaseUrl);
  repo = new KyselyImageRepository(db);
});

after(async () => {
  await db?.close();
  await s?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('every reader × every ?format= writer over damaged sources: 422, a broken transfer or the stored bytes, and the server keeps serving', async () => {
  const tally = { refused: 0, broken: 0, complete: 0 };
  const brokenOff: string[] = [];
  for (const c of cases) {
    for (const target of WRITERS) {
      const what = `${c.format} ${c.damage} → ${target}`;
      const r = await get(`/api/v1/images/${c.id}/file?format=${target}`);
      const variant = await repo.variant(c.id, target, '');
      if (r.status === 422) {
        assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/, what);
        const p = JSON.parse(r.body!.toString()) as { code: string; detail: string };
        assert.equal(p.code, 'UNSAFE_IMAGE', `${what}: ${p.detail}`);
        assert.match(p.detail, /cannot be converted: .{10,}/, what);
        assert.equal(variant, undefined, `${what}: a refused conversion stores no variant`);
        tally.refused++;
      } else {
        assert.equal(r.status, 200, `${what}: ${r.body?.toString().slice(0, 300) ?? r.broken}`);
        if (r.broken !== undefined) {
          assert.equal(variant, undefined, `${what}: a conversion that broke off stores no variant`);
          tally.broken++;
          brokenOff.push(`${what} (${r.headers.get('x-image-variant')}: ${r.broken})`);
        } else {
          // complete: exactly the bytes the server has stored for this answer
          const stored = r.headers.get('x-image-digest') ?? variant?.digest;
          assert.equal(sha256(r.body!), stored, `${what}: a complete body is the stored ${r.headers.get('x-image-variant')}`);
          tally.complete++;
        }
      }
      await assertServing(what);
    }
  }
  // nothing half-made is left: no staging upload, no scratch file
  const staging: unknown[] = [];
  for await (const e of new FsBlobStore(dataDir).listStaging()) staging.push(e);
  assert.deepEqual(staging, [], 'no staging upload is left behind');
  const scratch = join(dataDir, 'scratch');
  assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], [], 'no scratch file is left behind');
  assert.ok(tally.refused > 0, `some damage is refused before the first byte: ${JSON.stringify(tally)}`);
  console.log(`damaged variants: ${JSON.stringify(tally)}; broken off after the headers: ${brokenOff.join('; ') || 'none'}`);
  assert.equal(await s.stop(), 0, `the server stops cleanly after the run:\n${s.stderr().slice(-3000)}`);
});
