/**
 * The live Glance peer (OpenStack Glance 25.1 from Debian, no Keystone, sqlite, file store on
 * 127.0.0.1:9292), started and stopped through the shared peer scripts — `../shared/peers`
 * relative to the repository, read-only; the scripts keep their state under /tmp/peers. A bench
 * that compares with Glance measures it in the same run; when the peer cannot start, the bench
 * fails (no figure copied from a file stands in for it).
 *
 * Talking to it: the peers' request filter gives every request a project and admin roles, so
 * plain HTTP works (v2 API: POST /v2/images, PUT /v2/images/ID/file, GET .../file, DELETE).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './harness.js';

export const PEERS_DIR = join(REPO_ROOT, '..', 'shared', 'peers');
export const GLANCE_URL = 'http://127.0.0.1:9292';
/** where glance-start.sh's file store keeps image data */
export const GLANCE_IMAGES_DIR = '/tmp/peers/glance/images';

export interface GlancePeer {
  url: string;
  /** true when this process started it (and `stop()` will stop it) */
  startedHere: boolean;
  /** POST /v2/images (disk raw, container bare); returns the id */
  createImage(name: string, extra?: Record<string, unknown>): Promise<string>;
  deleteImage(id: string): Promise<void>;
  /** curl arguments that upload `file` as the image's data */
  uploadArgs(id: string, file: string): string[];
  /** stops the peer unless it was already running before `startGlance()` */
  stop(): Promise<void>;
}

async function answers(): Promise<boolean> {
  try {
    return (await fetch(`${GLANCE_URL}/versions`, { signal: AbortSignal.timeout(3000) })).status < 500;
  } catch {
    return false;
  }
}

/** A script of the shared peers (`../shared/peers/NAME`); throws naming what is missing without it. */
export function peerScript(name: string, peer = 'the Glance peer'): string {
  const path = join(PEERS_DIR, name);
  if (!existsSync(path)) {
    throw new Error(
      `${peer} needs ${path} (the shared peer scripts, at ../shared/peers next to the repository); without it this bench cannot measure its peer`,
    );
  }
  return path;
}

/** Starts Glance through glance-start.sh unless it already answers; throws when it cannot start. */
export async function startGlance(): Promise<GlancePeer> {
  let startedHere = false;
  if (!(await answers())) {
    const start = peerScript('glance-start.sh');
    try {
      execFileSync('glance-api', ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(`glance-api is not installed: install the peers with ${join(PEERS_DIR, 'setup.sh')} (Debian packages, a few minutes), then rerun`);
    }
    try {
      execFileSync(start, [], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    } catch (e) {
      const err = e as { stdout?: Buffer; stderr?: Buffer; message: string };
      throw new Error(`the Glance peer did not start (${start}): ${`${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message}`);
    }
    startedHere = true;
    if (!(await answers())) throw new Error(`glance-start.sh succeeded but ${GLANCE_URL}/versions does not answer`);
  }
  const json = { 'content-type': 'application/json' };
  return {
    url: GLANCE_URL,
    startedHere,
    async createImage(name, extra = {}) {
      const r = await fetch(`${GLANCE_URL}/v2/images`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ name, disk_format: 'raw', container_format: 'bare', ...extra }),
      });
      if (r.status !== 201) throw new Error(`Glance: POST /v2/images answered ${r.status}: ${await r.text()}`);
      return ((await r.json()) as { id: string }).id;
    },
    async deleteImage(id) {
      const r = await fetch(`${GLANCE_URL}/v2/images/${id}`, { method: 'DELETE' });
      if (r.status !== 204 && r.status !== 404) throw new Error(`Glance: DELETE /v2/images/${id} answered ${r.status}: ${await r.text()}`);
    },
    uploadArgs(id, file) {
      return ['-H', 'content-type: application/octet-stream', '-T', file, `${GLANCE_URL}/v2/images/${id}/file`];
    },
    async stop() {
      if (startedHere) execFileSync(peerScript('glance-stop.sh'), [], { stdio: 'ignore' });
    },
  };
}
