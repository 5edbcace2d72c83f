import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enableMemoryRelief, passedBytes, youngGenerationBytes } from './memory-relief.js';

const MiB = 1024 * 1024;

/** Allocates and drops `n` buffers of 1 MiB, as a stream's reads do. */
function dropBuffers(n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Buffer.alloc(MiB, 1)[i] ?? 0;
  return sum;
}

test('passing stepBytes of stream data frees the dropped buffers at once; less frees nothing', async () => {
  enableMemoryRelief(4 * MiB);
  const base = process.memoryUsage().arrayBuffers;
  dropBuffers(32);
  const before = process.memoryUsage().arrayBuffers;
  // V8 by itself collects only after ~64 MiB held outside its heap: the 32 MiB are still there
  assert.ok(before > base + 24 * MiB, `the dropped buffers are still held (${base} → ${before} bytes)`);
  passedBytes(MiB);
  const under = process.memoryUsage().arrayBuffers;
  assert.ok(under > before - MiB, `under the step nothing is collected (${before} → ${under} bytes)`);
  passedBytes(3 * MiB);
  // V8 sweeps the dead buffers' memory on a helper thread just after the collection
  let after = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 100 && after >= before - 24 * MiB; i++) {
    await new Promise((r) => setTimeout(r, 10));
    after = process.memoryUsage().arrayBuffers;
  }
  assert.ok(after < before - 24 * MiB, `at the step the dropped 32 MiB are freed (${before} → ${after} bytes)`);
});

test('the young generation is grown to the held 4 MiB at once and stays there through allocation that would grow it to 32 MiB', () => {
  enableMemoryRelief(4 * MiB);
  assert.ok(youngGenerationBytes() >= 4 * MiB, `grown at enable: ${youngGenerationBytes()} bytes`);
  let keep: object[] = [];
  const sizes = new Set<number>();
  for (let round = 0; round < 40; round++) {
    // short-lived objects with survivors: what makes V8 grow its semi-spaces (to 32 MiB unheld)
    for (let i = 0; i < 20_000; i++) {
      keep.push({ i, a: [i] });
      if (keep.length > 50_000) keep = [];
    }
    passedBytes(MiB);
    sizes.add(youngGenerationBytes());
  }
  assert.ok(Math.max(...sizes) < 8 * MiB, `held under 8 MiB: ${[...sizes].join(', ')} bytes`);
  assert.ok(keep.length > 0);
});
