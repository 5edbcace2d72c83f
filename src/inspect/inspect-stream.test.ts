import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { cached, qemuCreate, patternedRaw } from '../../test/support/qemu.js';
import { inspectFile } from './inspect-file.js';
import { inspectStream } from './inspect-stream.js';

const compressors: Record<string, string[]> = {
  gzip: ['gzip', '-c'],
  xz: ['xz', '-c', '-T1'],
  zstd: ['zstd', '-q', '-c'],
  bzip2: ['bzip2', '-c'],
};

async function compressed(src: string, name: string, chain: string[]): Promise<string> {
  return cached(name, async (tmp) => {
    let data = readFileSync(src);
    for (const c of chain) {
      const [cmd, ...args] = compressors[c]!;
      data = execFileSync(cmd!, args, { input: data, maxBuffer: 1 << 30 });
    }
    writeFileSync(tmp, data);
  });
}

async function* chunks(b: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, Math.min(b.length, i + size));
}

for (const wrapper of Object.keys(compressors)) {
  test(`${wrapper}: the inner image is inspected through the wrapper`, async () => {
    const qcow2 = await qemuCreate('wrap-base.qcow2', 'qcow2', '2G');
    const file = await compressed(qcow2, `wrap-base.qcow2.${wrapper}`, [wrapper]);
    const plain = await inspectFile(qcow2);
    const r = await inspectFile(file);
    assert.equal(r.format, plain.format);
    assert.equal(r.virtualSize, plain.virtualSize);
    assert.equal(r.verdict, plain.verdict);
    assert.equal(r.compression?.length, 1);
    assert.equal(r.compression![0]!.format, wrapper);
    assert.equal(r.compression![0]!.decompressedSize, readFileSync(qcow2).length);
    assert.equal(r.fileSize, readFileSync(file).length);
  });
}

test('nested wrappers are peeled in a loop (gzip inside xz inside zstd)', async () => {
  const raw = await patternedRaw('wrap-raw-1m.img', 1 << 20);
  const file = await compressed(raw, 'wrap-raw-1m.img.gz.xz.zst', ['gzip', 'xz', 'zstd']);
  const r = await inspectFile(file);
  assert.deepEqual(
    r.compression!.map((c) => c.format),
    ['zstd', 'xz', 'gzip'],
  );
  assert.equal(r.format, 'raw');
  assert.equal(r.virtualSize, BigInt(1 << 20));
  assert.equal(r.verdict, 'safe');
});

test('more wrappers than maxWrapperDepth are refused (WRAPPER_DEPTH)', async () => {
  const raw = await patternedRaw('wrap-raw-1m.img', 1 << 20);
  const file = await compressed(raw, 'wrap-raw-1m.img.gz4', ['gzip', 'gzip', 'gzip', 'gzip']);
  const r = await inspectFile(file);
  assert.equal(r.verdict, 'refused');
  assert.ok(r.findings.some((f) => f.code === 'WRAPPER_DEPTH'));
  const ok = await inspectFile(file, { limits: { maxWrapperDepth: 4 } });
  assert.ok(!ok.findings.some((f) => f.code === 'WRAPPER_DEPTH'));
  assert.equal(ok.verdict, 'safe');
});

test('a decompression bomb is stopped by size and by ratio, before its output is held', async () => {
  // 256 MiB of zeros compresses to ~250 KiB of gzip (about 1000:1)
  const bomb = await cached('wrap-bomb-256m.gz', async (tmp) => {
    execFileSync('sh', ['-c', `head -c 268435456 /dev/zero | gzip -c > ${tmp}`]);
  });
  const bySize = await inspectFile(bomb, { limits: { maxDecompressedBytes: 32 << 20 } });
  assert.equal(bySize.verdict, 'refused');
  const f = bySize.findings.find((x) => x.code === 'DECOMPRESSION_BOMB');
  assert.ok(f, JSON.stringify(bySize.findings));
  assert.match(f.message, /decompressed-size limit/);
  assert.ok(bySize.compression![0]!.decompressedSize <= 32 << 20);
  const byRatio = await inspectFile(bomb, { limits: { maxCompressionRatio: 100, ratioFloorBytes: 1 << 20, zeroBombRatio: 0 } });
  assert.ok(byRatio.findings.some((x) => x.code === 'DECOMPRESSION_BOMB' && /ratio/.test(x.message)));
  // all zeros: the zero-bomb rule would refuse it (decompress.test.ts); here only the generic limits are under test
  const allowed = await inspectFile(bomb, { limits: { zeroBombRatio: 0 } });
  assert.ok(!allowed.findings.some((x) => x.code === 'DECOMPRESSION_BOMB'));
  assert.equal(allowed.virtualSize, 268435456n);
});

test('a corrupt or truncated compressed stream is refused (COMPRESSION_ERROR), not a crash', async () => {
  const raw = await patternedRaw('wrap-raw-1m.img', 1 << 20);
  for (const w of ['gzip', 'xz', 'zstd', 'bzip2']) {
    const whole = readFileSync(await compressed(raw, `wrap-raw-1m.img.${w}`, [w]));
    const truncated = whole.subarray(0, Math.floor(whole.length / 2));
    const r = await inspectStream(chunks(truncated, 4096));
    assert.equal(r.verdict, 'refused', `${w}: ${JSON.stringify(r.findings)}`);
    assert.ok(
      r.findings.some((f) => f.code === 'COMPRESSION_ERROR'),
      `${w}: ${JSON.stringify(r.findings)}`,
    );
    const clean = await inspectStream(chunks(whole, 4096));
    assert.equal(clean.verdict, 'safe', `${w}: ${JSON.stringify(clean.findings)}`);
  }
});

test('stream inspection holds bounded memory whatever the stream length', async () => {
  // 512 MiB of patterned bytes generated on the fly; the inspector may hold head + tail + regions only
  const { StreamInspector } = await import('../formats/stream-inspector.js');
  const si = new StreamInspector();
  const chunk = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 0xff);
  let peak = 0;
  for (let i = 0; i < 512; i++) {
    await si.write(chunk);
    peak = Math.max(peak, si.heldBytes);
  }
  const r = await si.end();
  assert.equal(r.virtualSize, 512n << 20n);
  assert.ok(peak <= (1 << 20) + (64 << 10) + (16 << 20), `held ${peak}`);
  assert.ok(peak < 2 << 20, `held ${peak} bytes for a plain stream`);
});
