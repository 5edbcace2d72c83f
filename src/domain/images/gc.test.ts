import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Digest } from '../../store/blob-store.js';
import { FsBlobStore } from '../../store/fs-blob-store.js';
import { planGc, runGc } from './gc.js';

async function blob(store: FsBlobStore, dir: string, size: number, ageMs: number): Promise<Digest> {
  const s = await store.startUpload();
  await s.write(randomBytes(size));
  const { digest } = await s.commit();
  const hex = digest.slice(7);
  const t = new Date(Date.now() - ageMs);
  utimesSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex), t, t);
  return digest;
}

test('GC collects old unreferenced blobs only; young ones (grace) and referenced ones stay; totals add up', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-gc-'));
  try {
    const store = new FsBlobStore(dir);
    const used = await blob(store, dir, 1000, 7200_000);
    const old = await blob(store, dir, 2000, 7200_000);
    const young = await blob(store, dir, 4000, 1000); // just committed by an upload whose catalog update has not landed
    const reborn = await blob(store, dir, 8000, 7200_000);
    const plan = await planGc({ store, referenced: new Set([used]), now: new Date(), graceMs: 3600_000 });
    assert.equal(plan.totalBytes, 15000);
    assert.equal(plan.usedBytes, 1000);
    assert.equal(plan.youngBytes, 4000);
    assert.equal(plan.reclaimableBytes, 10000);
    assert.deepEqual(plan.candidates.map((c) => c.digest).sort(), [old, reborn].sort());
    // between plan and run an image starts referencing `reborn`: it must survive
    const told: Digest[][] = [];
    const r = await runGc(plan, store, { recheck: async () => new Set([used, reborn]), forget: async (d) => void told.push(d) });
    assert.deepEqual(r, { count: 1, bytes: 2000 });
    // what was derived from the deleted blob is forgotten with it, once, and nothing else
    assert.deepEqual(told, [[old]]);
    assert.equal(await store.stat(old), undefined);
    for (const d of [used, young, reborn]) assert.ok(await store.stat(d), d);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('GC tells nothing to forget when it deleted nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-gc-'));
  try {
    const store = new FsBlobStore(dir);
    const used = await blob(store, dir, 1000, 7200_000);
    const plan = await planGc({ store, referenced: new Set([used]), now: new Date(), graceMs: 3600_000 });
    let told = 0;
    assert.deepEqual(await runGc(plan, store, { recheck: async () => new Set([used]), forget: async () => void told++ }), { count: 0, bytes: 0 });
    assert.equal(told, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('GC plan says when the bytes held back by the grace period become reclaimable', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-gc-'));
  try {
    const store = new FsBlobStore(dir);
    const now = new Date();
    await blob(store, dir, 4000, 60_000); // deleted just after an upload a minute ago
    await blob(store, dir, 3000, 1_800_000);
    await blob(store, dir, 2000, 7200_000);
    const plan = await planGc({ store, referenced: new Set(), now, graceMs: 3600_000 });
    assert.equal(plan.graceMs, 3600_000);
    assert.equal(plan.youngBytes, 7000);
    assert.equal(plan.reclaimableBytes, 2000);
    // mtimes have second resolution on some filesystems: allow 1 s either way
    const near = (d: Date | undefined, expected: number) =>
      assert.ok(d && Math.abs(d.getTime() - expected) <= 1000, `${d?.toISOString()} vs ${new Date(expected).toISOString()}`);
    near(plan.youngReclaimableFrom, now.getTime() + 1_800_000);
    near(plan.youngReclaimableBy, now.getTime() + 3_540_000);
    const none = await planGc({ store, referenced: new Set(), now, graceMs: 0 });
    assert.equal(none.youngBytes, 0);
    assert.equal(none.youngReclaimableFrom, undefined);
    assert.equal(none.youngReclaimableBy, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
