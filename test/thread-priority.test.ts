/**
 * `imago serve` runs its hashing workers 10 nice steps below the event loop, relative to the
 * thread that makes them (src/io/parallel-hasher.ts; issue 20 item 6): a server started at another
 * nice keeps the same order. Read from outside, in /proc, on the real process.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { getPriority, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { spawnServer, type SpawnedServer } from './support/spawned-server.js';

/** Each thread of `pid` and its nice value (field 19 of /proc/PID/task/TID/stat). */
function threads(pid: number): Map<number, number> {
  return new Map(
    readdirSync(`/proc/${pid}/task`).map((t) => {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'latin1');
      return [Number(t), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])];
    }),
  );
}

async function upload(s: SpawnedServer, bytes: number): Promise<void> {
  const headers = { authorization: `Bearer ${s.token}` };
  const created = await fetch(`${s.url}/api/v1/images`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'prio' }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const { id } = (await created.json()) as { id: string };
  const put = await fetch(`${s.url}/api/v1/images/${id}/file`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/octet-stream' },
    body: Buffer.alloc(bytes, 7),
  });
  assert.ok(put.ok, `PUT answered ${put.status}: ${await put.text()}`);
}

test(
  'hashing workers run 10 below the event loop that made them, whatever nice the server runs at',
  { skip: process.platform !== 'linux' && 'Linux only' },
  async () => {
    const base = getPriority();
    // a nice the test can set (raising it needs no privilege) and from which +10 is still below 19
    const serverNice = Math.min(base + 5, 9);
    const dataDir = mkdtempSync(join(tmpdir(), 'imago-prio-'));
    const s = await spawnServer(dataDir);
    try {
      const pid = s.proc.pid!;
      // Linux: this is the main thread's nice; the threads it makes from now on start with it
      setPriority(pid, serverNice);
      const before = threads(pid);
      assert.equal(before.get(pid), serverNice, 'the main thread took the nice it was given');
      await upload(s, 4 << 20);
      const after = threads(pid);
      assert.equal(after.get(pid), serverNice, 'the event loop keeps its nice');
      const added = [...after].filter(([tid]) => !before.has(tid));
      const hashing = added.filter(([, nice]) => nice === serverNice + 10);
      // sha256 and sha512 on two pool workers (one per core, at least two)
      assert.ok(hashing.length >= 2, `two hashing workers at ${serverNice + 10}, 10 below the loop: new threads ${JSON.stringify(added)}`);
      assert.ok(
        added.every(([, nice]) => nice === serverNice + 10 || nice === serverNice),
        `a new thread is either a hashing worker (10 below) or at the loop's nice: ${JSON.stringify(added)}`,
      );
    } finally {
      await s.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
);
