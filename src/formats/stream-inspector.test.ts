import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferSource, readExact } from './byte-source.js';
import { describeFormat, type FormatDescriptor } from './format.js';
import { inspectSource } from './inspect-source.js';
import { rawFormat } from './raw.js';
import { StreamInspector } from './stream-inspector.js';

/** A synthetic format: `magic` at 0, then `inspect` (named qcow2: the engine only runs known names). */
function syntheticFormat(magic: string, description: string, inspect: FormatDescriptor['inspect']): FormatDescriptor {
  return describeFormat({
    name: 'qcow2',
    description: `synthetic: ${description}`,
    async probe(src) {
      return Buffer.from(await src.read(0, magic.length)).toString('latin1') === magic;
    },
    inspect,
    checks: [],
  });
}

/** A synthetic format whose header at 0 names two more regions to read, in the order given. */
function pointerFormat(): FormatDescriptor {
  return syntheticFormat('PTR', '"PTR" magic, then two u32 offsets it reads 8 bytes at, in order', async (src) => {
    const h = Buffer.from(await readExact(src, 0, 11, 'header'));
    const a = await readExact(src, h.readUInt32LE(3), 8, 'first region');
    const b = await readExact(src, h.readUInt32LE(7), 8, 'second region');
    return { virtualSize: BigInt(Buffer.from(a).readUInt32LE(0) + Buffer.from(b).readUInt32LE(0)), details: {}, findings: [] };
  });
}

function image(first: number, second: number, size = 1 << 20): Uint8Array {
  const b = Buffer.alloc(size);
  b.write('PTR', 0, 'latin1');
  b.writeUInt32LE(first, 3);
  b.writeUInt32LE(second, 7);
  b.writeUInt32LE(1000, first);
  b.writeUInt32LE(234, second);
  return b;
}

async function stream(bytes: Uint8Array, chunk: number, limits: Record<string, number>) {
  const si = new StreamInspector({ formats: [pointerFormat(), rawFormat], limits });
  for (let i = 0; i < bytes.length; i += chunk) await si.write(bytes.subarray(i, i + chunk));
  return si.end();
}

test('regions named by the header are captured as they stream by (ascending)', async () => {
  const bytes = image(300_000, 700_000);
  const ref = await inspectSource(new BufferSource(bytes), { formats: [pointerFormat(), rawFormat] });
  assert.equal(ref.virtualSize, 1234n);
  for (const chunk of [1, 17, 4096]) {
    const r = await stream(bytes, chunk, { headBytes: 64 });
    assert.equal(r.virtualSize, 1234n, `chunk ${chunk}`);
    assert.equal(r.verdict, 'safe');
  }
});

test('a region asked for after its bytes went by is INSPECTION_INCOMPLETE (fail closed), never a guess', async () => {
  // the second region lies *before* the first: by the time the first is read, it is gone
  const bytes = image(700_000, 300_000);
  const ref = await inspectSource(new BufferSource(bytes), { formats: [pointerFormat(), rawFormat] });
  assert.equal(ref.verdict, 'safe', 'random access reads it fine');
  const r = await stream(bytes, 4096, { headBytes: 64 });
  assert.equal(r.verdict, 'refused');
  const f = r.findings.find((x) => x.code === 'INSPECTION_INCOMPLETE');
  assert.ok(f, JSON.stringify(r.findings));
  assert.match(f.message, /bytes 300000\.\.300008 were needed/);
  // the same image is fine when the head holds both regions
  const big = await stream(bytes, 4096, { headBytes: 1 << 20 });
  assert.equal(big.verdict, 'safe');
});

test('declared regions over maxCaptureBytes are refused (OVER_LIMIT), memory stays bounded', async () => {
  const fmt = syntheticFormat('BIG', 'asks for a 1 MiB table at 512 KiB', async (src) => {
    await readExact(src, 512 * 1024, 1 << 20, 'table');
    return { details: {}, findings: [] };
  });
  const bytes = Buffer.alloc(4 << 20);
  bytes.write('BIG', 0, 'latin1');
  const si = new StreamInspector({ formats: [fmt, rawFormat], limits: { headBytes: 4096, maxCaptureBytes: 64 * 1024 } });
  let peak = 0;
  for (let i = 0; i < bytes.length; i += 65536) {
    await si.write(bytes.subarray(i, i + 65536));
    peak = Math.max(peak, si.heldBytes);
  }
  const r = await si.end();
  assert.equal(r.verdict, 'refused');
  assert.ok(
    r.findings.some((f) => f.code === 'OVER_LIMIT' && /capture limit/.test(f.message)),
    JSON.stringify(r.findings),
  );
  assert.ok(peak <= 4096 + 65536 + 64 * 1024, `held ${peak}`);
});

test('the tail is available at the end whatever the chunking', async () => {
  const fmt = syntheticFormat('TAIL', 'reads a trailer in the last 8 bytes', async (src) => {
    if (src.size === undefined) throw new (await import('./byte-source.js')).NeedBytes(0, 8, true);
    const t = await readExact(src, src.size - 8, 8, 'trailer');
    return { virtualSize: Buffer.from(t).readBigUInt64LE(0), details: {}, findings: [] };
  });
  const bytes = Buffer.alloc(300_001);
  bytes.write('TAIL', 0, 'latin1');
  bytes.writeBigUInt64LE(424242n, bytes.length - 8);
  for (const chunk of [1, 17, 512, 65536, 1 << 20]) {
    const si = new StreamInspector({ formats: [fmt, rawFormat], limits: { headBytes: 1024, tailBytes: 4096 } });
    for (let i = 0; i < bytes.length; i += chunk) await si.write(bytes.subarray(i, i + chunk));
    assert.equal((await si.end()).virtualSize, 424242n, `chunk ${chunk}`);
  }
});
