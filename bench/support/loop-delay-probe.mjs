/**
 * Preload for bench/concurrency only (never loaded by the product): the bench starts `imago serve`
 * with `NODE_OPTIONS=--import=<this file>` and `IMAGO_BENCH_LOOP_DELAY_FILE=<path>`. In the server's
 * main thread it enables `perf_hooks.monitorEventLoopDelay` (10 ms resolution) and writes the
 * histogram as JSON to that path on SIGUSR2 — which then also resets it, so that the bench can frame
 * one phase: SIGUSR2 before (reset), SIGUSR2 after (the phase's figures) — and at exit.
 *
 * The SIGUSR2 write is asynchronous (on libuv's pool), so that the probe does not stop the loop it
 * measures: it used to write and rename the file synchronously every 200 ms, and on this machine's
 * ext4 (mounted with `discard`) a rename over the previous file flushed the new one and discarded
 * the old one's blocks in the calling thread — 100–600 ms in D state on the main thread while the
 * disk was busy (seen by sampling /proc/PID/task/PID/{stat,syscall,stack} during the bench), and
 * recorded as the server's own loop delay.
 *
 * The histogram's values include the sampling interval (an idle loop records ~10 ms); the figures
 * written here are the delay beyond it (value − resolution, at least 0), as @fastify/under-pressure
 * reports them.
 *
 * A late timer is not always the loop's own doing: on the bench's two shared cores the main thread
 * is often runnable and not running — a client (curl, the upload client) or another thread holds
 * the CPU for a few ms in the kernel. So a second timer, at the same interval, reads the main
 * thread's schedstat (time on a CPU, time runnable waiting for one) at every tick, and the snapshot
 * splits the worst gap into the two, and gives the largest delay that remains once the wait for a
 * CPU is taken out (`maxOwnMs`: the loop running, or asleep in a lock or a system call). Worker threads and child processes of the server do not probe: the variable is
 * removed from the environment once read.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import process from 'node:process';
import { setInterval } from 'node:timers';
import { isMainThread } from 'node:worker_threads';

const RESOLUTION_MS = 10;
const out = process.env.IMAGO_BENCH_LOOP_DELAY_FILE;

if (isMainThread && out) {
  delete process.env.IMAGO_BENCH_LOOP_DELAY_FILE;
  const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  h.enable();
  let seq = 0;
  let signals = 0;
  const beyond = (ns) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
  // per tick of the second timer: [ms on a CPU, ms runnable waiting for one] since boot, for the main thread
  const schedstat = `/proc/self/task/${process.pid}/schedstat`;
  const sched = () => {
    try {
      const [run, wait] = readFileSync(schedstat, 'utf8').split(' ');
      return [Number(run) / 1e6, Number(wait) / 1e6];
    } catch {
      return undefined;
    }
  };
  let worst = { gapMs: 0, runMs: 0, waitMs: 0 };
  let maxOwnMs = 0;
  let last = { at: performance.now(), stat: sched() };
  if (last.stat) {
    setInterval(() => {
      const now = { at: performance.now(), stat: sched() };
      const gap = now.at - last.at - RESOLUTION_MS;
      if (now.stat && gap > 0) {
        const runMs = now.stat[0] - last.stat[0];
        const waitMs = now.stat[1] - last.stat[1];
        if (gap > worst.gapMs) worst = { gapMs: gap, runMs, waitMs };
        maxOwnMs = Math.max(maxOwnMs, gap - waitMs);
      }
      if (now.stat) last = now;
    }, RESOLUTION_MS).unref();
  }
  const snapshot = () => ({
    seq: ++seq,
    signals,
    pid: process.pid,
    samples: h.count,
    maxMs: h.count ? beyond(h.max) : 0,
    p99Ms: h.count ? beyond(h.percentile(99)) : 0,
    p50Ms: h.count ? beyond(h.percentile(50)) : 0,
    worst,
    maxOwnMs,
  });
  // one write at a time, in signal order: a later snapshot is never overwritten by an earlier one
  let writing = Promise.resolve();
  process.on('SIGUSR2', () => {
    signals++;
    const text = JSON.stringify(snapshot());
    h.reset();
    worst = { gapMs: 0, runMs: 0, waitMs: 0 };
    maxOwnMs = 0;
    const tmp = `${out}.${seq}.tmp`;
    writing = writing.then(() => writeFile(tmp, text).then(() => rename(tmp, out))).catch((e) => process.stderr.write(`loop-delay probe: ${e.message}\n`));
  });
  process.on('exit', () => {
    writeFileSync(`${out}.tmp`, JSON.stringify(snapshot()));
    renameSync(`${out}.tmp`, out);
  });
}
