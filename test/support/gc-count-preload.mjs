/**
 * Preload for test/memory-relief-served.test.ts only (never loaded by the product): started with
 * `NODE_OPTIONS=--import=<this file>` and `IMAGO_TEST_GC_COUNT_FILE=<path>`, the main thread counts
 * its garbage collections by kind (a PerformanceObserver on 'gc' entries) and writes them as JSON
 * to that path at exit: `{ forcedMinor, minor, major }`. Worker threads do not count.
 */
import { writeFileSync } from 'node:fs';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import process from 'node:process';
import { isMainThread } from 'node:worker_threads';

const out = process.env.IMAGO_TEST_GC_COUNT_FILE;
if (isMainThread && out) {
  delete process.env.IMAGO_TEST_GC_COUNT_FILE;
  const counts = { forcedMinor: 0, minor: 0, major: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const { kind, flags } = e.detail;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
        counts.minor++;
        if (flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) counts.forcedMinor++;
      } else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) counts.major++;
    }
  }).observe({ entryTypes: ['gc'] });
  process.on('exit', () => writeFileSync(out, JSON.stringify(counts)));
}
