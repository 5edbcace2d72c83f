/** Feeds bytes to the stream inspector at a fixed chunk size (the streaming half of every parser test). */
import type { InspectOptions, InspectionReport } from '../../src/formats/inspect-source.js';
import { StreamInspector } from '../../src/formats/stream-inspector.js';

export async function inspectInChunks(bytes: Uint8Array, chunkSize: number, opts: InspectOptions = {}): Promise<InspectionReport & { peakHeld: number }> {
  const si = new StreamInspector(opts);
  let peakHeld = 0;
  for (let off = 0; off < bytes.length; off += chunkSize) {
    await si.write(bytes.subarray(off, Math.min(bytes.length, off + chunkSize)));
    peakHeld = Math.max(peakHeld, si.heldBytes);
  }
  const report = await si.end();
  return { ...report, peakHeld };
}

export const CHUNK_SIZES = [1, 17, 512, 65536] as const;
