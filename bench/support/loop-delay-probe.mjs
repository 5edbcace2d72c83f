/**
 * Preload for bench/concurrency only (never loaded by the product): the bench starts `imago serve`
 * with `NODE_OPTIONS=--import=<this file>` and `IMAGO_BENCH_LOOP_DELAY_FILE=<path>`. In the server's
 * main thread it enables `perf_hooks.monitorEventLoopDelay` (10 ms resolution) and writes the
 * histogram as JSON to that path every 200 ms, at exit, and on SIGUSR2 — which then also resets it,
 * so that the bench can frame one phase: SIGUSR2 before (reset), SIGUSR2 after (the phase's figures).
 *
 * The histogram's values include the sampling interval (an idle loop records ~10 ms); the figures
 * written here are the delay beyond it (value − resolution, at least 0), as @fastify/under-pressure
 * reports them. Worker threads and child processes of the server do not probe: the variable is
 * removed from the environment once read.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
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
  const write = () => {
    const snapshot = {
      seq: ++seq,
      signals,
      pid: process.pid,
      samples: h.count,
      maxMs: h.count ? beyond(h.max) : 0,
      p99Ms: h.count ? beyond(h.percentile(99)) : 0,
      p50Ms: h.count ? beyond(h.percentile(50)) : 0,
    };
    writeFileSync(`${out}.tmp`, JSON.stringify(snapshot));
    renameSync(`${out}.tmp`, out);
  };
  setInterval(write, 200).unref();
  process.on('SIGUSR2', () => {
    signals++;
    write();
    h.reset();
  });
  process.on('exit', write);
}
