/**
 * The live Distribution registry peer (Debian's docker-registry 2.8, no auth, filesystem, plain
 * HTTP on 127.0.0.1:5000), started and stopped through the shared peer scripts (`../shared/peers`,
 * read-only; state under /tmp/peers/registry). A bench that compares with it measures it in the
 * same run; when it cannot start, the bench fails.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { PEERS_DIR, peerScript } from './glance-peer.js';

export const REGISTRY_HOST = '127.0.0.1:5000';

export interface RegistryPeer {
  host: string;
  /** true when this process started it (and `stop()` will stop it) */
  startedHere: boolean;
  stop(): Promise<void>;
}

async function answers(): Promise<boolean> {
  try {
    return (await fetch(`http://${REGISTRY_HOST}/v2/`, { signal: AbortSignal.timeout(3000) })).status === 200;
  } catch {
    return false;
  }
}

const script = (name: string) => peerScript(name, 'the registry peer');

/** Starts the registry through registry-start.sh unless it already answers /v2/; throws when it cannot start. */
export async function startRegistry(): Promise<RegistryPeer> {
  let startedHere = false;
  if (!(await answers())) {
    try {
      execFileSync('docker-registry', ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(`docker-registry is not installed: install the peers with ${join(PEERS_DIR, 'setup.sh')} (Debian packages), then rerun`);
    }
    try {
      execFileSync('bash', [script('registry-start.sh')], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const out = e as { stdout?: Buffer; stderr?: Buffer };
      throw new Error(`the registry peer did not start (registry-start.sh): ${String(out.stdout ?? '')}${String(out.stderr ?? '')}`.trim());
    }
    if (!(await answers())) throw new Error(`the registry peer started but ${REGISTRY_HOST}/v2/ does not answer 200 (port held by something else?)`);
    startedHere = true;
  }
  return {
    host: REGISTRY_HOST,
    startedHere,
    async stop() {
      if (startedHere) execFileSync('bash', [script('registry-stop.sh')], { stdio: 'ignore' });
    },
  };
}
