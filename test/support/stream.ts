/** Feeds bytes to the stream inspector at a fixed chunk size (the streaming half of every parser test). */
import assert from 'node:assert/strict';
import { BufferSource } from '../../src/formats/byte-source.js';
import { inspectSource, type InspectOptions, type InspectionReport } from '../../src/formats/inspect-source.js';
import { StreamInspector } from '../../src/formats/stream-inspector.js';

/**
 * Feeds `bytes` in chunks of `chunkSize`. With `smallUntil`, only the first that many bytes go in
 * at `chunkSize` (where the headers are) and the rest at 64 KiB, so byte-at-a-time feeding of a
 * multi-MiB image stays quick.
 */
export async function inspectInChunks(
  bytes: Uint8Array,
  chunkSize: number,
  opts: InspectOptions = {},
  smallUntil = Infinity,
): Promise<InspectionReport & { peakHeld: number }> {
  const si = new StreamInspector(opts);
  let peakHeld = 0;
  for (let off = 0; off < bytes.length;) {
    const n = off < smallUntil ? chunkSize : 65536;
    await si.write(bytes.subarray(off, Math.min(bytes.length, off + n)));
    off += n;
    peakHeld = Math.max(peakHeld, si.heldBytes);
  }
  const report = await si.end();
  return { ...report, peakHeld };
}

export const CHUNK_SIZES = [1, 17, 512, 65536] as const;

/**
 * The stream inspector at every chunk size gives the random-access answer (format, subformat,
 * virtual size, finding codes) while holding at most head + tail + capture bytes. Chunk size 1
 * covers the first `byteWiseUntil` bytes (where the headers are), 17 the first 4 MiB.
 */
export async function assertStreamMatches(bytes: Uint8Array, ref: InspectionReport, opts: InspectOptions = {}, byteWiseUntil = 256 << 10): Promise<void> {
  const { DEFAULT_LIMITS, limitsWith } = await import('../../src/formats/limits.js');
  const l = limitsWith(opts.limits);
  const bound = Math.max(DEFAULT_LIMITS.headBytes, l.headBytes) + l.tailBytes + l.maxCaptureBytes;
  for (const n of CHUNK_SIZES) {
    const s = await inspectInChunks(bytes, n, opts, n === 1 ? byteWiseUntil : n === 17 ? 4 << 20 : Infinity);
    assert.equal(s.format, ref.format, `chunk ${n}`);
    assert.equal(s.subformat, ref.subformat, `chunk ${n}`);
    assert.equal(s.virtualSize, ref.virtualSize, `chunk ${n}`);
    assert.deepEqual(s.findings.map((f) => f.code).sort(), ref.findings.map((f) => f.code).sort(), `chunk ${n}: ${JSON.stringify(s.findings)}`);
    assert.ok(s.peakHeld <= bound, `chunk ${n}: held ${s.peakHeld}`);
  }
}

/** Random-access inspection of bytes in memory. */
export function inspectBytes(bytes: Uint8Array, opts: InspectOptions = {}): Promise<InspectionReport> {
  return inspectSource(new BufferSource(bytes), opts);
}
