/**
 * bench/concurrency — many clients at once against a real `imago serve` (SQLite, filesystem blobs),
 * next to the live Glance peer under the same load in the same run (issue 20 item 6):
 *
 * 1. N uploads at once, each creating an image and PUTting `--mib` MiB. Every body starts with its
 *    own 4 KiB random block, so content addressing stores N blobs, not one. The client is node:http
 *    in this process, streaming the rest from one cached file (its CPU time is printed).
 * 2. M downloads at once of the stored images (round robin): `curl --parallel` in ceil(M / 250)
 *    processes (curl allows at most 300 transfers in parallel per process), `-o /dev/null`; per-transfer
 *    times from curl's `--write-out`.
 * 3. C creates by 16 concurrent clients (fetch, keep-alive).
 *
 * Recorded for imago: total throughput, p50/p99 per request, the server's peak RSS (VmHWM, reset
 * through /proc/PID/clear_refs before each phase) and its event-loop delay (max, p99 of
 * perf_hooks.monitorEventLoopDelay inside the server: bench/support/loop-delay-probe.mjs, preloaded
 * through NODE_OPTIONS, which only this bench sets). Imago runs first in each phase, then Glance.
 *
 * The clients (this process's thread and its curls) run at nice +`--client-nice` (10) relative to
 * the servers, started before: they stand for other machines. Loop delay is the server's event loop
 * waiting; on 2 cores shared with equal-priority clients it measured the scheduler, not the server.
 *
 *   npm run bench -- concurrency [--uploads 100] [--mib 64] [--downloads 1000] [--creates 2000] [--clients 16] [--client-nice 10] [--cold] [--quick]
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { getPriority, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { GLANCE_IMAGES_DIR, startGlance, type GlancePeer } from './support/glance-peer.js';
import { createImage, dataFile, evictPageCache, numberOption, warmPageCache, peakRss, percentile, printTable, serve, type Served } from './support/harness.js';

/** curl refuses --parallel-max above 300 */
const PER_CURL = 250;
const HEAD = 4096;
const PROBE = join(import.meta.dirname, 'support', 'loop-delay-probe.mjs');

interface Loop {
  seq: number;
  signals: number;
  samples: number;
  maxMs: number;
  p99Ms: number;
  /** the longest gap between two ticks of the probe's second timer, and how much of it the main thread was on a CPU / runnable waiting for one */
  worst?: { gapMs: number; runMs: number; waitMs: number };
  /** the largest delay once the main thread's wait for a CPU (other threads and processes running) is taken out */
  maxOwnMs?: number;
}

interface Phase {
  wall: number;
  /** seconds per request */
  latencies: number[];
  failures: number;
  /** the first failure's message */
  firstError?: string;
}

interface ServerFigures {
  rssMiB: number;
  loop: Loop;
}

const seconds = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;

/** PUTs `bytes` bytes: a distinct random 4 KiB head, then `file` from offset 4 KiB. */
function put(url: string, headers: Record<string, string>, file: string, bytes: number, agent: Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'PUT', agent, headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(bytes) } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => ((res.statusCode ?? 0) < 300 ? resolve() : reject(new Error(`PUT ${url} answered ${res.statusCode}: ${body.slice(0, 300)}`))));
      },
    );
    req.on('error', reject);
    req.write(randomBytes(HEAD));
    const src = createReadStream(file, { start: HEAD, end: bytes - 1, highWaterMark: 1 << 20 });
    src.on('error', reject);
    src.pipe(req);
  });
}

/**
 * Glance's sqlite catalog answers 500 ("database is locked") when concurrent requests update it; a
 * client would try again, so Glance's requests are retried (up to 20 times, 20 ms apart) and the
 * retries counted. The request's latency runs from its first attempt; the retry of an upload creates
 * a new image and sends all its bytes again.
 */
async function retried<T>(retries: { n: number }, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= 20 || !/answered 5\d\d/.test((e as Error).message)) throw e;
      retries.n++;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Runs `count` tasks with `clients` of them in flight at a time; failures are counted, not thrown (all failing throws). */
async function load(count: number, clients: number, task: (i: number) => Promise<void>): Promise<Phase> {
  const latencies: number[] = [];
  let failures = 0;
  let next = 0;
  let firstError: unknown;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: Math.min(clients, count) }, async () => {
      while (next < count) {
        const i = next++;
        const t = process.hrtime.bigint();
        try {
          await task(i);
          latencies.push(seconds(t));
        } catch (e) {
          failures++;
          firstError ??= e;
        }
      }
    }),
  );
  const wall = seconds(t0);
  const message = firstError instanceof Error ? firstError.message : String(firstError);
  if (latencies.length === 0) throw new Error(message);
  return { wall, latencies, failures, firstError: failures ? message : undefined };
}

/** M downloads at once with curl --parallel, in ceil(M / 250) curl processes started together. */
async function curlDownloads(urls: string[], headers: string[], bytes: number): Promise<Phase> {
  const dir = mkdtempSync(join(tmpdir(), 'imago-bench-curl-'));
  try {
    const procs = Math.ceil(urls.length / PER_CURL);
    const per = Math.ceil(urls.length / procs);
    const errors: string[] = [];
    const t0 = process.hrtime.bigint();
    const outputs = await Promise.all(
      Array.from({ length: procs }, (_, p) => {
        const mine = urls.slice(p * per, (p + 1) * per);
        const config = [
          'parallel',
          `parallel-max = ${mine.length}`,
          'parallel-immediate',
          'silent',
          'no-progress-meter',
          'show-error',
          'write-out = "%{http_code} %{time_total} %{size_download}\\n"',
          ...headers.map((h) => `header = "${h}"`),
          ...mine.flatMap((u) => [`url = "${u}"`, 'output = "/dev/null"']),
        ];
        const cfg = join(dir, `curl-${p}.conf`);
        writeFileSync(cfg, `${config.join('\n')}\n`);
        return new Promise<string>((resolve, reject) => {
          const child = spawn('curl', ['-K', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          child.stdout.on('data', (d) => (out += d));
          child.stderr.on('data', (d) => (err += d));
          child.on('error', reject);
          // a failed transfer makes curl exit non-zero: it is counted from its --write-out line, its error kept
          child.on('close', () => {
            errors.push(...err.split('\n').filter((l) => l.startsWith('curl: (')));
            resolve(out);
          });
        });
      }),
    );
    const wall = seconds(t0);
    const latencies: number[] = [];
    let failures = 0;
    let firstError: string | undefined;
    for (const line of outputs.join('').trim().split('\n')) {
      const [code, time, size] = line.split(' ');
      if (code === '200' && Number(size) === bytes) latencies.push(Number(time));
      else {
        failures++;
        firstError ??= `HTTP ${code}, ${size} bytes; ${errors[0] ?? ''}`;
      }
    }
    if (latencies.length === 0) throw new Error(`every download failed: ${outputs.join('').slice(0, 300)}`);
    return { wall, latencies, failures, firstError };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Reads the probe's snapshot after a SIGUSR2 (which also resets the histogram). */
async function loopDelay(file: string, pid: number): Promise<Loop> {
  const read = (): Loop | undefined => (existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Loop) : undefined);
  const before = read()?.signals ?? 0;
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 250; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const now = read();
    if (now && now.signals > before) return now;
  }
  throw new Error(`the event-loop probe did not answer SIGUSR2 (${file}): was the server started with ${PROBE}?`);
}

/** Frames one phase on the imago server: resets its peak RSS and its loop-delay histogram before, reads both after. */
async function framed(s: Served, probeFile: string, phase: () => Promise<Phase>): Promise<[Phase, ServerFigures]> {
  const pid = s.proc.pid!;
  writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
  await loopDelay(probeFile, pid);
  const result = await phase();
  const loop = await loopDelay(probeFile, pid);
  return [result, { rssMiB: peakRss(pid) / 2 ** 20, loop }];
}

export async function run(args: string[]): Promise<void> {
  const uploads = numberOption(args, '--uploads', 100, 4);
  const mib = numberOption(args, '--mib', 64, 1);
  const downloads = numberOption(args, '--downloads', 1000, 20);
  const creates = numberOption(args, '--creates', 2000, 50);
  const clients = numberOption(args, '--clients', 16, 16);
  const clientNice = numberOption(args, '--client-nice', 10, 10);
  const cold = args.includes('--cold');
  const file = dataFile(mib);
  const bytes = mib * 2 ** 20;
  readFileSync(file); // into the page cache
  const probeDir = mkdtempSync(join(tmpdir(), 'imago-bench-loop-'));
  const probeFile = join(probeDir, 'loop-delay.json');
  const glance: GlancePeer = await startGlance();
  const glanceIds: string[] = [];
  let s: Served | undefined;
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
  try {
    s = await serve([], {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${pathToFileURL(PROBE).href}`.trim(),
      IMAGO_BENCH_LOOP_DELAY_FILE: probeFile,
    });
    const imago = s;
    const auth = { authorization: `Bearer ${imago.token}` };
    // Both servers are started; from here this thread (the upload client) and the curl processes
    // it spawns (children inherit the niceness) run `clientNice` below them: the clients stand for
    // other machines, and on 2 shared cores their CPU would otherwise be taken from the servers.
    // Every thread of this process: on Linux a nice value is a thread's, and setPriority(0) would
    // lower only this one, leaving this process's V8 workers (its garbage collections) at the
    // servers' priority.
    const serverNice = getPriority();
    for (const tid of readdirSync('/proc/self/task')) setPriority(Number(tid), Math.min(19, serverNice + clientNice));

    // 1. uploads
    const ourIds: string[] = [];
    const cpu0 = process.cpuUsage();
    const [upOurs, upServer] = await framed(imago, probeFile, () =>
      load(uploads, uploads, async (i) => {
        const id = await createImage(imago, `bench-conc-${i}`);
        await put(`${imago.url}/api/v1/images/${id}/file`, auth, file, bytes, agent);
        ourIds.push(id);
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    const retries = { uploads: { n: 0 }, creates: { n: 0 } };
    const stored: string[] = [];
    // a PUT that failed half way leaves its image in `saving`: the retry starts over with a new image
    const upTheirs = await load(uploads, uploads, (i) =>
      retried(retries.uploads, async () => {
        const id = await glance.createImage(`imago-bench-conc-${i}`);
        glanceIds.push(id);
        await put(`${glance.url}/v2/images/${id}/file`, {}, file, bytes, agent);
        stored.push(id);
      }),
    );

    // 2. downloads, round robin over the stored images
    const ourUrls = Array.from({ length: downloads }, (_, i) => `${imago.url}/api/v1/images/${ourIds[i % ourIds.length]}/file`);
    // both stores' files in the page cache (imago writes its blobs past it, O_DIRECT; Glance through
    // it), or with --cold out of it: the same start for both
    const cache = (dir: string) => {
      execFileSync('sync');
      (cold ? evictPageCache : warmPageCache)(dir);
    };
    cache(join(imago.dataDir, 'blobs'));
    const [dlOurs, dlServer] = await framed(imago, probeFile, () => curlDownloads(ourUrls, [`authorization: Bearer ${imago.token}`], bytes));
    cache(GLANCE_IMAGES_DIR);
    const dlTheirs = await curlDownloads(
      Array.from({ length: downloads }, (_, i) => `${glance.url}/v2/images/${stored[i % stored.length]}/file`),
      [],
      bytes,
    );

    // 3. creates by `clients` concurrent clients
    const [crOurs, crServer] = await framed(imago, probeFile, () => load(creates, clients, (i) => createImage(imago, `bench-create-${i}`).then(() => {})));
    const crTheirs = await load(creates, clients, async (i) => {
      glanceIds.push(await retried(retries.creates, () => glance.createImage(`imago-bench-create-${i}`)));
    });

    const mbps = (p: Phase) => (p.latencies.length * bytes) / 1e6 / p.wall;
    const rate = (p: Phase) => p.latencies.length / p.wall;
    const f = (x: number, d = 2) => x.toFixed(d);
    const rows = [['load', 'measure', 'imago', 'Glance 25.1', 'ratio imago / Glance (time; < 1: imago faster)']];
    const transfer = (label: string, o: Phase, g: Phase) => {
      rows.push([label, 'wall s', f(o.wall), f(g.wall), f(o.wall / g.wall)]);
      rows.push(['', 'total MB/s', f(mbps(o), 0), f(mbps(g), 0), f(mbps(g) / mbps(o))]);
      for (const p of [50, 99])
        rows.push([
          '',
          `p${p} per request s`,
          f(percentile(o.latencies, p)),
          f(percentile(g.latencies, p)),
          f(percentile(o.latencies, p) / percentile(g.latencies, p)),
        ]);
    };
    transfer(`${uploads} uploads of ${mib} MiB at once (create + PUT)`, upOurs, upTheirs);
    transfer(`${downloads} downloads of ${mib} MiB at once`, dlOurs, dlTheirs);
    rows.push([`${creates} creates, ${clients} clients`, 'creates/s', f(rate(crOurs), 0), f(rate(crTheirs), 0), f(rate(crTheirs) / rate(crOurs))]);
    for (const p of [50, 99])
      rows.push([
        '',
        `p${p} ms`,
        f(percentile(crOurs.latencies, p) * 1e3),
        f(percentile(crTheirs.latencies, p) * 1e3),
        f(percentile(crOurs.latencies, p) / percentile(crTheirs.latencies, p)),
      ]);
    process.stdout.write(
      `concurrency on 127.0.0.1, same run, imago first then Glance in each phase; uploads from node:http in this process, ` +
        `downloads ${cold ? "from the disk (both stores' files dropped from the page cache before)" : "from the page cache (both stores' files read into it before)"} by ${Math.ceil(downloads / PER_CURL)} curl --parallel process(es); clients at nice +${clientNice} relative to both servers\n`,
    );
    printTable(rows);
    const failed = [
      ['imago uploads', upOurs],
      ['Glance uploads', upTheirs],
      ['imago downloads', dlOurs],
      ['Glance downloads', dlTheirs],
      ['imago creates', crOurs],
      ['Glance creates', crTheirs],
    ].filter(([, p]) => (p as Phase).failures > 0);
    for (const [label, p] of failed) {
      const { failures, firstError } = p as Phase;
      process.stdout.write(`failed requests, ${label}: ${failures} (left out of the figures; first: ${firstError})\n`);
    }
    process.stdout.write(`Glance requests retried after a 500 (sqlite "database is locked"): uploads ${retries.uploads.n}, creates ${retries.creates.n}\n`);
    process.stdout.write(`upload client CPU (this process): ${f((cpu.user + cpu.system) / 1e6)} s over ${f(upOurs.wall)} s wall\n\n`);

    process.stdout.write(
      'imago serve during each phase (peak RSS: VmHWM reset before the phase; event-loop delay beyond the 10 ms sampling interval; ' +
        "the worst gap split by the main thread's schedstat into time on a CPU and time runnable, waiting for one; " +
        'the largest delay without that wait: the loop running, or asleep in a lock or system call)\n',
    );
    // the worst tick-to-tick interval in full (the delay plus the 10 ms interval): on a CPU + waiting for one + asleep
    const split = (l: Loop) =>
      l.worst
        ? `${f(l.worst.gapMs + 10, 1)}: ${f(l.worst.runMs, 1)} on CPU, ${f(l.worst.waitMs, 1)} waiting, ${f(Math.max(0, l.worst.gapMs + 10 - l.worst.runMs - l.worst.waitMs), 1)} asleep`
        : '-';
    printTable([
      [
        'phase',
        'peak RSS MiB',
        'ratio / 200 MiB budget',
        'loop delay max ms',
        'loop delay p99 ms',
        'ratio max / 50 ms budget',
        'worst interval ms (delay + 10)',
        'max without CPU wait ms',
      ],
      ...(
        [
          ['uploads', upServer],
          ['downloads', dlServer],
          ['creates', crServer],
        ] as const
      ).map(([label, x]) => [
        label,
        f(x.rssMiB, 0),
        f(x.rssMiB / 200),
        f(x.loop.maxMs, 1),
        f(x.loop.p99Ms, 1),
        f(x.loop.maxMs / 50),
        split(x.loop),
        x.loop.maxOwnMs === undefined ? '-' : f(x.loop.maxOwnMs, 1),
      ]),
    ]);
  } finally {
    agent.destroy();
    // one at a time: Glance's sqlite catalog answers 500 (database is locked) to parallel deletes
    for (const id of glanceIds) await glance.deleteImage(id).catch(() => {});
    await s?.stop();
    await glance.stop();
    rmSync(probeDir, { recursive: true, force: true });
  }
}
