/**
 * bench/oci — skopeo (Debian) pushes a containerDisk (an OCI layout made by
 * ../shared/peers/make-containerdisk.sh: one gzip layer holding /disk/disk.qcow2) into a real
 * `imago serve` through its OCI door and pulls it back, next to the same push and pull against the
 * live Distribution registry peer (docker-registry 2.8), in alternating runs. Each run pushes to a
 * new repository (so the client sends every byte again: nothing is skipped by a HEAD that finds the
 * blob) and pulls into a new directory. skopeo runs with an empty blob-info cache each time (its
 * cache remembers where a blob was pushed before and mounts it from there instead of sending it:
 * a "push" of 1 GiB in 0.1 s): as root in a private mount namespace with a tmpfs over
 * /var/lib/containers/cache, otherwise with a fresh HOME. Imago inspects and hashes (sha256 +
 * sha512) every byte it receives; the registry only sha256.
 *
 *   npm run bench -- oci [--mib 1024] [--runs 3] [--quick]   (--quick: 16 MiB, 1 run)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PEERS_DIR } from './support/glance-peer.js';
import { BENCH_DIR, dataFile, median, numberOption, printTable, serve, timeCommand } from './support/harness.js';
import { startRegistry } from './support/registry-peer.js';

/** The containerDisk layout of a `mib` MiB qcow2 with incompressible data, made once and kept in the bench cache. */
function containerDisk(mib: number): string {
  const layout = join(BENCH_DIR, `containerdisk-${mib}m`);
  if (existsSync(join(layout, 'index.json'))) return layout;
  const disk = join(BENCH_DIR, `containerdisk-${mib}m.qcow2`);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', dataFile(mib), disk]);
  rmSync(layout, { recursive: true, force: true });
  execFileSync('bash', [join(PEERS_DIR, 'make-containerdisk.sh'), disk, layout, 'v1', 'gzip'], { stdio: ['ignore', 'pipe', 'inherit'] });
  rmSync(disk);
  return layout;
}

const ROOT_CACHE = '/var/lib/containers/cache';

/** Seconds a `skopeo copy` takes, with an empty blob-info cache (see the top of the file). */
function coldSkopeoCopy(args: string[]): number {
  const copy = ['skopeo', '--insecure-policy', 'copy', '-q', ...args];
  if (process.getuid?.() === 0) {
    mkdirSync(ROOT_CACHE, { recursive: true });
    return timeCommand('unshare', ['-m', 'sh', '-c', `mount -t tmpfs imago-bench ${ROOT_CACHE} && exec "$@"`, 'sh', ...copy]);
  }
  const home = mkdtempSync(join(tmpdir(), 'imago-bench-skopeo-'));
  try {
    const t = process.hrtime.bigint();
    execFileSync('env', [`HOME=${home}`, ...copy], { stdio: ['ignore', 'pipe', 'inherit'] });
    return Number(process.hrtime.bigint() - t) / 1e9;
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 1024, 16);
  const runs = numberOption(args, '--runs', 3, 1);
  const layout = containerDisk(mib);
  const pulls = join(BENCH_DIR, 'oci-pulls');
  const registry = await startRegistry();
  const imago = await serve();
  try {
    const project = await imago.fetch('/api/v1/projects', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench' }),
    });
    if (!project.ok && project.status !== 409) throw new Error(`imago: POST /api/v1/projects answered ${project.status}: ${await project.text()}`);
    const imagoHost = imago.url.replace('http://', '');
    const creds = `bench:${imago.token}`;
    const times = { imagoPush: [] as number[], imagoPull: [] as number[], regPush: [] as number[], regPull: [] as number[] };
    const skopeo = coldSkopeoCopy;
    for (let i = 0; i < runs; i++) {
      const jobs = [
        () => {
          const ref = `docker://${imagoHost}/bench/disk-${i}:v1`;
          times.imagoPush.push(skopeo(['--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, ref]));
          rmSync(pulls, { recursive: true, force: true });
          mkdirSync(pulls, { recursive: true });
          times.imagoPull.push(skopeo(['--src-tls-verify=false', '--src-creds', creds, ref, `oci:${join(pulls, 'imago')}:v1`]));
        },
        () => {
          const ref = `docker://${registry.host}/bench/disk-${process.pid}-${i}:v1`;
          times.regPush.push(skopeo(['--dest-tls-verify=false', `oci:${layout}:v1`, ref]));
          rmSync(pulls, { recursive: true, force: true });
          mkdirSync(pulls, { recursive: true });
          times.regPull.push(skopeo(['--src-tls-verify=false', ref, `oci:${join(pulls, 'registry')}:v1`]));
        },
      ];
      for (let k = 0; k < jobs.length; k++) {
        execFileSync('sync');
        jobs[(i + k) % jobs.length]!();
      }
    }
    const f = (x: number) => x.toFixed(2);
    const mbps = (t: number) => ((mib * 1048576) / 1e6 / t).toFixed(0);
    process.stdout.write(`skopeo copy of a ${mib} MiB containerDisk (gzip layer, incompressible qcow2), ${runs} alternating run(s), 127.0.0.1\n`);
    const rows = [['direction', `imago s (median of ${runs})`, 'imago MB/s', 'registry 2.8 s', 'ratio imago / registry (time; ≤ 1 goal)']];
    for (const [label, ours, theirs] of [
      ['push (oci: → docker://)', times.imagoPush, times.regPush],
      ['pull (docker:// → oci:)', times.imagoPull, times.regPull],
    ] as const) {
      rows.push([label, f(median(ours)), mbps(median(ours)), f(median(theirs)), f(median(ours) / median(theirs))]);
    }
    printTable(rows);
  } finally {
    rmSync(pulls, { recursive: true, force: true });
    await imago.stop();
    await registry.stop();
  }
}
