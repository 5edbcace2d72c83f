/** Feeds bytes to the stream inspector at a fixed chunk size (the streaming half of every parser test). */
import type { InspectOptions, InspectionReport } from '../../src/formats/inspect-source.js';
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
  for (let off = 0; off < bytes.length; ) {
    const n = off < smallUntil ? chunkSize : 65536;
    await si.write(bytes.subarray(off, Math.min(bytes.length, off + n)));
    off += n;
    peakHeld = Math.max(peakHeld, si.heldBytes);
  }
  const report = await si.end();
  return { ...report, peakHeld };
}

export const CHUNK_SIZES = [1, 17, 512, 65536] as const;
