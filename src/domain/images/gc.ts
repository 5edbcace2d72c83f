/**
 * Garbage collection of blobs no image references. Never blocks uploads or reads (no read-only
 * window): a blob is only a candidate when no image references it AND it was committed longer
 * ago than the grace period — so a blob an upload has just committed, whose catalog update has
 * not landed yet, is never collected. Just before deleting, the referenced set is read again:
 * a blob an image started to reference in the meantime is kept.
 */
import type { BlobInfo, BlobStore, Digest } from '../../store/blob-store.js';

export interface GcPlan {
  totalBytes: number;
  usedBytes: number;
  reclaimableBytes: number;
  /** blobs kept only because they are younger than the grace period */
  youngBytes: number;
  /** the grace period the plan was made with */
  graceMs: number;
  /** when the first / the last of the young blobs leaves the grace period (absent when none is young) */
  youngReclaimableFrom?: Date;
  youngReclaimableBy?: Date;
  candidates: BlobInfo[];
}

export async function planGc(opts: { store: BlobStore; referenced: Set<Digest>; now: Date; graceMs: number }): Promise<GcPlan> {
  const plan: GcPlan = { totalBytes: 0, usedBytes: 0, reclaimableBytes: 0, youngBytes: 0, graceMs: opts.graceMs, candidates: [] };
  const cutoff = opts.now.getTime() - opts.graceMs;
  for await (const b of opts.store.list()) {
    plan.totalBytes += b.sizeBytes;
    if (opts.referenced.has(b.digest)) plan.usedBytes += b.sizeBytes;
    else if (b.committedAt.getTime() >= cutoff) {
      plan.youngBytes += b.sizeBytes;
      const at = new Date(b.committedAt.getTime() + opts.graceMs + 1);
      if (!plan.youngReclaimableFrom || at < plan.youngReclaimableFrom) plan.youngReclaimableFrom = at;
      if (!plan.youngReclaimableBy || at > plan.youngReclaimableBy) plan.youngReclaimableBy = at;
    } else {
      plan.reclaimableBytes += b.sizeBytes;
      plan.candidates.push(b);
    }
  }
  return plan;
}

export async function runGc(
  plan: GcPlan,
  store: BlobStore,
  opts: {
    recheck: () => Promise<Set<Digest>>;
    /** told the digests deleted, once they are, so that what was derived from them goes too (the registry's generated layers) */
    forget?: (deleted: Digest[]) => Promise<void>;
  },
): Promise<{ count: number; bytes: number }> {
  const referenced = await opts.recheck();
  const deleted: Digest[] = [];
  let bytes = 0;
  for (const b of plan.candidates) {
    if (referenced.has(b.digest)) continue;
    if (await store.delete(b.digest)) {
      deleted.push(b.digest);
      bytes += b.sizeBytes;
    }
  }
  if (deleted.length > 0) await opts.forget?.(deleted);
  return { count: deleted.length, bytes };
}
