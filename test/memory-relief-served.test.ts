/**
 * Memory relief in the real `imago serve` (bin/imago.js: the CLI bundle when it is built, as
 * `npm test` builds it): uploading 64 MiB must run a forced young-generation collection every
 * 16 MiB passed on. The relief lives in src/io/memory-relief.ts; the CLI bundle has its own copy
 * of that module, so enabling it from the CLI's code instead of the server's (src/app.ts) silently
 * turned it off — this test fails then (no forced collection at all).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import { spawnServer, type SpawnedServer } from './support/spawned-server.js';

const PRELOAD = join(import.meta.dirname, 'support', 'gc-count-preload.mjs');
const MiB = 1024 * 1024;

let dir: string;
let server: SpawnedServer | undefined;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'imago-relief-'));
});
after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('imago serve collects the young generation every 16 MiB an upload passes on (memory relief is on in the served process)', async () => {
  const counts = join(dir, 'gc.json');
  server = await spawnServer(join(dir, 'data'), {
    env: { NODE_OPTIONS: `--import=${pathToFileURL(PRELOAD).href}`, IMAGO_TEST_GC_COUNT_FILE: counts },
  });
  const s = server;
  const file = join(dir, 'disk.raw');
  writeFileSync(file, randomBytes(64 * MiB));
  const created = await fetch(`${s.url}/api/v1/images`, {
    method: 'POST',
    headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'relief', type: 'DATABLOCK' }),
  });
  const text = await created.text();
  assert.equal(created.status, 201, text);
  const { id } = JSON.parse(text) as { id: string };
  execFileSync('curl', ['-sS', '-f', '-o', '/dev/null', '-H', `authorization: Bearer ${s.token}`, '-T', file, `${s.url}/api/v1/images/${id}/file`]);
  assert.equal(await s.stop(), 0);
  const seen = JSON.parse(readFileSync(counts, 'utf8')) as { forcedMinor: number; minor: number; major: number };
  // 64 MiB / 16 MiB = 4 relief steps (the last may fall on the final chunk); none when the relief is off
  assert.ok(seen.forcedMinor >= 3, `forced young-generation collections during a 64 MiB upload: ${JSON.stringify(seen)}`);
});
