/**
 * bench/glance — the same Image API v2 workload against Imago's Glance door (`/image`, a real
 * `imago serve`) and against Glance 25.1 itself (the live peer, started through ../shared/peers),
 * on 127.0.0.1, in the same run, printed as ratios (ours / Glance's time; below 1 is faster):
 *
 *   - upload: POST /v2/images, then `curl -T` of the same incompressible file to
 *     PUT /v2/images/ID/file (Imago: sha256 + sha512, inspection, fsync; Glance: md5 + sha512);
 *     alternating runs, nothing deleted between timed runs (see bench/ingest.ts for why)
 *   - download: `curl -o /dev/null` of GET /v2/images/ID/file, alternating; from disk (both stores'
 *     files dropped from the page cache first) and then again from the page cache
 *   - create: `--creates` POST /v2/images from `--clients` concurrent clients, images per second
 *   - list: GET /v2/images?limit=1000 once the catalogs hold the created images, p50 of `--lists`
 *
 *   npm run bench -- glance [--mib 1024] [--runs 3] [--creates 1000] [--clients 8] [--lists 20] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { GLANCE_IMAGES_DIR, startGlance } from './support/glance-peer.js';
import { dataFile, evictPageCache, median, numberOption, percentile, printTable, serve, timeCommand, type Served } from './support/harness.js';

/** One Image API v2 endpoint (`base` ends before `/v2`), with the header that authenticates. */
interface ImageApi {
  label: string;
  base: string;
  headers: Record<string, string>;
}

function curlHeaders(api: ImageApi): string[] {
  return Object.entries(api.headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
}

async function createImage(api: ImageApi, name: string): Promise<string> {
  const r = await fetch(`${api.base}/v2/images`, {
    method: 'POST',
    headers: { ...api.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ name, disk_format: 'raw', container_format: 'bare' }),
  });
  const text = await r.text();
  if (r.status !== 201) throw new Error(`${api.label}: POST /v2/images answered ${r.status}: ${text}`);
  return (JSON.parse(text) as { id: string }).id;
}

async function deleteImage(api: ImageApi, id: string): Promise<void> {
  const r = await fetch(`${api.base}/v2/images/${id}`, { method: 'DELETE', headers: api.headers });
  await r.arrayBuffer();
  if (r.status !== 204 && r.status !== 404) throw new Error(`${api.label}: DELETE /v2/images/${id} answered ${r.status}`);
}

/** `n` creates from `clients` concurrent loops; returns the ids and the wall time. */
async function createMany(api: ImageApi, n: number, clients: number, prefix: string): Promise<{ ids: string[]; seconds: number }> {
  const ids: string[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < n) {
        const i = next++;
        ids.push(await createImage(api, `${prefix}-${i}`));
      }
    }),
  );
  return { ids, seconds: (performance.now() - started) / 1000 };
}

/** GET /v2/images?limit=1000, `times` times; the seconds of each and the number of images listed. */
async function listTimes(api: ImageApi, times: number): Promise<{ seconds: number[]; listed: number }> {
  const seconds: number[] = [];
  let listed = 0;
  for (let i = 0; i < times; i++) {
    const t0 = performance.now();
    const r = await fetch(`${api.base}/v2/images?limit=1000`, { headers: api.headers });
    const body = (await r.json()) as { images?: unknown[] };
    seconds.push((performance.now() - t0) / 1000);
    if (r.status !== 200 || !Array.isArray(body.images)) throw new Error(`${api.label}: GET /v2/images answered ${r.status}`);
    listed = body.images.length;
  }
  return { seconds, listed };
}

/** A project and a writer token in it, so the Glance door's images have an owner as Glance's do. */
async function writerApi(s: Served): Promise<ImageApi> {
  const admin = async (path: string, body: unknown) => {
    const r = await s.fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await r.text();
    if (!r.ok) throw new Error(`imago: POST ${path} answered ${r.status}: ${text}`);
    return JSON.parse(text) as Record<string, string>;
  };
  await admin('/api/v1/projects', { name: 'bench' });
  const { token } = await admin('/api/v1/tokens', { name: 'glance-bench', project: 'bench', role: 'writer', user: 'bench' });
  return { label: 'imago', base: `${s.url}/image`, headers: { 'x-auth-token': token! } };
}

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 1024, 16);
  const runs = numberOption(args, '--runs', 3, 1);
  const creates = numberOption(args, '--creates', 1000, 20);
  const clients = numberOption(args, '--clients', 8, 2);
  const lists = numberOption(args, '--lists', 20, 2);
  const bytes = mib * 1024 * 1024;
  const files = Array.from({ length: runs }, (_, i) => dataFile(mib, i));

  const peer = await startGlance();
  const server = await serve();
  const made: (() => Promise<void>)[] = [];
  try {
    const imago = await writerApi(server);
    const glance: ImageApi = { label: 'Glance', base: peer.url, headers: {} };
    const apis = [imago, glance];

    // upload and download, alternating which side goes first
    const up = new Map<ImageApi, number[]>(apis.map((a) => [a, []]));
    const down = new Map<ImageApi, number[]>(apis.map((a) => [a, []]));
    const cold = new Map<ImageApi, number[]>(apis.map((a) => [a, []]));
    const storeDirs = [join(server.dataDir, 'blobs'), GLANCE_IMAGES_DIR];
    const uploaded = new Map<ImageApi, string[]>(apis.map((a) => [a, []]));
    for (let i = 0; i < runs; i++) {
      for (let k = 0; k < apis.length; k++) {
        const api = apis[(i + k) % apis.length]!;
        execFileSync('sync'); // Glance does not fsync: write back what the previous upload left dirty
        const id = await createImage(api, `bench-upload-${i}`);
        made.push(() => deleteImage(api, id));
        const args = ['-sS', '-f', '-o', '/dev/null', ...curlHeaders(api), '-H', 'content-type: application/octet-stream', '-T', files[i]!];
        up.get(api)!.push(timeCommand('curl', [...args, `${api.base}/v2/images/${id}/file`]));
        uploaded.get(api)!.push(id);
      }
    }
    // cold: both stores' files dropped from the page cache first (Imago stages with O_DIRECT, so
    // its just-uploaded blob is not cached; Glance's is); warm: the same download right after
    execFileSync('sync');
    for (let i = 0; i < runs; i++) {
      for (let k = 0; k < apis.length; k++) {
        const api = apis[(i + k) % apis.length]!;
        const id = uploaded.get(api)![i]!;
        const get = ['-sS', '-f', '-o', '/dev/null', ...curlHeaders(api), `${api.base}/v2/images/${id}/file`];
        for (const dir of storeDirs) evictPageCache(dir);
        cold.get(api)!.push(timeCommand('curl', get));
        down.get(api)!.push(timeCommand('curl', get));
      }
    }

    // creates, then lists of the catalog they filled
    const createSeconds = new Map<ImageApi, number>();
    for (const api of apis) {
      const { ids, seconds } = await createMany(api, creates, clients, 'bench-create');
      createSeconds.set(api, seconds);
      for (const id of ids) made.push(() => deleteImage(api, id));
    }
    const listed = new Map<ImageApi, { seconds: number[]; listed: number }>();
    for (const api of apis) {
      await listTimes(api, 1); // warm
      listed.set(api, await listTimes(api, lists));
    }

    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    const [ui, ug] = [median(up.get(imago)!), median(up.get(glance)!)];
    const [di, dg] = [median(down.get(imago)!), median(down.get(glance)!)];
    const [ki, kg] = [median(cold.get(imago)!), median(cold.get(glance)!)];
    const [ci, cg] = [createSeconds.get(imago)!, createSeconds.get(glance)!];
    const [li, lg] = [listed.get(imago)!, listed.get(glance)!];
    const mbps = (t: number) => `${(bytes / 1e6 / t).toFixed(0)} MB/s`;
    const perSec = (s: number) => `${(creates / s).toFixed(0)}/s`;
    process.stdout.write(
      `Image API v2: imago /image vs Glance 25.1, ${mib} MiB upload/download (${runs} alternating run(s)), ` +
        `${creates} creates from ${clients} clients, list of up to 1,000 (${lists} times)\n`,
    );
    printTable([
      ['request', 'imago', 'Glance 25.1', 'ratio imago / Glance (time)', 'issue 11 goal'],
      ['upload (median s)', `${ui.toFixed(2)} (${mbps(ui)})`, `${ug.toFixed(2)} (${mbps(ug)})`, ratio(ui, ug), '≤ 0.25 (issue 20: ≤ 0.5)'],
      ['download, page cache (median s)', `${di.toFixed(2)} (${mbps(di)})`, `${dg.toFixed(2)} (${mbps(dg)})`, ratio(di, dg), '≤ 1.0'],
      ['download, from disk (median s)', `${ki.toFixed(2)} (${mbps(ki)})`, `${kg.toFixed(2)} (${mbps(kg)})`, ratio(ki, kg), '≤ 1.0'],
      ['create (s for all)', `${ci.toFixed(2)} (${perSec(ci)})`, `${cg.toFixed(2)} (${perSec(cg)})`, ratio(ci, cg), '≤ 0.05'],
      [
        `list (p50 s; p99)`,
        `${median(li.seconds).toFixed(3)}; ${percentile(li.seconds, 99).toFixed(3)} (${li.listed} images)`,
        `${median(lg.seconds).toFixed(3)}; ${percentile(lg.seconds, 99).toFixed(3)} (${lg.listed} images)`,
        ratio(median(li.seconds), median(lg.seconds)),
        '≤ 0.1',
      ],
    ]);
  } finally {
    for (const remove of made) await remove().catch(() => undefined);
    await server.stop();
    await peer.stop();
  }
}
