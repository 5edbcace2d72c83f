/**
 * Peeling under hostile input: the zero-bomb rule (every codec, including gzip, whose ratio can
 * never reach the generic 5000:1 limit), backpressure of every decoder (memory stays bounded
 * however far a stream expands), decoder processes that end with their stream, and decoder errors
 * that say what the tool said. Bombs are made by the real compressors from a stream of zeros.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { limitsWith } from '../formats/limits.js';
import { DecompressionLimitError } from '../io/decompress.js';
import { inspectStream } from './inspect-stream.js';
import { peel } from './peel.js';

const MiB = 1 << 20;

/** The compressors, fast settings: the bombs below are made at test time. */
const COMPRESS: Record<string, string> = {
  gzip: 'gzip -1',
  xz: 'xz -0 -T1',
  zstd: 'zstd -q -1',
  bzip2: 'bzip2 -1',
};

/**
 * A bomb of `units` × 16 MiB of zeros: the compressor's output for 16 MiB of zeros (made once, from
 * `head -c 16M /dev/zero`), repeated. gzip members, xz streams, zstd frames and bzip2 streams may
 * all be concatenated, and every decoder reads on to the end, so this is a valid file of the codec.
 */
function bomb(codec: string, units: number): AsyncIterable<Uint8Array> {
  const unit = execFileSync('sh', ['-c', `head -c 16M /dev/zero | ${COMPRESS[codec]}`]);
  return (async function* () {
    for (let i = 0; i < units; i++) yield* chunks(unit, 65536);
  })();
}

async function* chunks(b: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, Math.min(b.length, i + size));
}

/** Our decoder processes still alive (children of this process running a decoder tool). */
function decoderChildren(): string[] {
  let out = '';
  try {
    out = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)], { encoding: 'utf8' });
  } catch {
    return []; // ps exits 1 when there is none
  }
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /\b(xz|zstd|l?bzip2)$/.test(l));
}

async function waitNoDecoderChildren(): Promise<string[]> {
  for (let i = 0; i < 50 && decoderChildren().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  return decoderChildren();
}

for (const codec of Object.keys(COMPRESS)) {
  test(`zero-bomb rule: a ${codec} of 10 GiB of zeros is refused before 200 MiB of output`, async (t) => {
    const started = performance.now();
    {
      const peeled = await peel(bomb(codec, 640), limitsWith()); // 10 GiB of zeros
      let refusal: unknown;
      try {
        for await (const _ of peeled.output);
      } catch (e) {
        refusal = e;
      }
      const [layer] = peeled.layers();
      t.diagnostic(
        `${codec}: refused after ${layer!.compressedSize} compressed bytes read, ${layer!.decompressedSize} bytes passed on, ` +
          `${Math.round(performance.now() - started)} ms`,
      );
      assert.ok(refusal instanceof DecompressionLimitError, String(refusal));
      assert.equal(refusal.limit, 'zeros', refusal.message);
      assert.ok(refusal.decompressedBytes < 200 * MiB, `refused only after ${refusal.decompressedBytes} bytes`);
      assert.ok(layer!.decompressedSize <= 200 * MiB);
      const report = await inspectStream(bomb(codec, 64));
      const f = report.findings.find((x) => x.code === 'DECOMPRESSION_BOMB');
      assert.equal(report.verdict, 'refused');
      assert.ok(f, JSON.stringify(report.findings));
      assert.match(f.message, /nearly all zeros/);
      assert.match(f.message, /imago convert -O qcow2/);
    }
    assert.deepEqual(await waitNoDecoderChildren(), [], 'the decoder process ends with its stream');
  });
}

test('zero-bomb rule: a gzip of a mostly-random 100 MiB image and of a 128 MiB disk with 4% data pass', async () => {
  const random = Buffer.alloc(100 * MiB);
  for (let i = 0; i < 100; i++) if (i % 4 !== 3) randomBytes(MiB).copy(random, i * MiB); // 75% random, 25% zeros
  const disk = Buffer.alloc(128 * MiB);
  for (let i = 0; i < 128; i += 32) randomBytes(MiB).copy(disk, i * MiB); // a data MiB every 32 MiB: 96.9% zeros
  for (const [name, bytes] of [
    ['mostly random', random],
    ['4% data', disk],
  ] as const) {
    const gz = execFileSync('gzip', ['-1', '-c'], { input: bytes, maxBuffer: 256 * MiB });
    const r = await inspectStream(chunks(gz, 65536));
    assert.ok(!r.findings.some((f) => f.code === 'DECOMPRESSION_BOMB'), `${name}: ${JSON.stringify(r.findings)}`);
    assert.equal(r.compression?.[0]?.decompressedSize, bytes.length);
  }
});

test('zero-bomb rule: configurable (0 turns it off; the ratio applies)', async () => {
  const off = await inspectStream(bomb('gzip', 6), { limits: { zeroBombRatio: 0 } });
  assert.ok(!off.findings.some((f) => f.code === 'DECOMPRESSION_BOMB'), JSON.stringify(off.findings));
  const high = await inspectStream(bomb('gzip', 6), { limits: { zeroBombRatio: 300 } }); // gzip -1 of zeros: 229:1
  assert.ok(!high.findings.some((f) => f.code === 'DECOMPRESSION_BOMB'), JSON.stringify(high.findings));
  const on = await inspectStream(bomb('gzip', 6));
  assert.ok(
    on.findings.some((f) => f.code === 'DECOMPRESSION_BOMB'),
    JSON.stringify(on.findings),
  );
});

for (const codec of Object.keys(COMPRESS)) {
  test(`backpressure: a ${codec} of 1 GiB of zeros read slowly holds bounded memory, and its decoder ends with the stream`, async (t) => {
    // every limit out of the way: only backpressure bounds the memory here
    const limits = limitsWith({ zeroBombRatio: 0, maxCompressionRatio: Number.MAX_SAFE_INTEGER });
    globalThis.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const peeled = await peel(bomb(codec, 64), limits); // 1 GiB of zeros
    let read = 0;
    for await (const c of peeled.output) {
      read += c.length;
      peak = Math.max(peak, process.memoryUsage().rss);
      if (read % (16 * MiB) < c.length) await new Promise((r) => setTimeout(r, 5)); // a slow consumer
      if (read >= 256 * MiB) break;
    }
    t.diagnostic(`${codec}: rss grew ${((peak - before) / MiB).toFixed(0)} MiB over 256 MiB of output`);
    assert.ok(read >= 256 * MiB);
    assert.ok(peak - before < 64 * MiB, `rss grew ${((peak - before) / MiB).toFixed(0)} MiB`);
    assert.deepEqual(await waitNoDecoderChildren(), [], 'the decoder process is killed when the consumer stops');
  });
}

test("a decoder's failure carries what the tool said; the process is gone", async () => {
  const raw = randomBytes(2 * MiB);
  for (const codec of ['xz', 'zstd', 'bzip2']) {
    const whole = execFileSync('sh', ['-c', COMPRESS[codec]!], { input: raw, maxBuffer: 16 * MiB });
    const truncated = whole.subarray(0, whole.length >> 1);
    const r = await inspectStream(chunks(truncated, 4096));
    const f = r.findings.find((x) => x.code === 'COMPRESSION_ERROR');
    assert.ok(f, `${codec}: ${JSON.stringify(r.findings)}`);
    assert.match(f.message, new RegExp(`${codec} exited with status \\d+: \\S`), f.message);
  }
  assert.deepEqual(await waitNoDecoderChildren(), []);
});
