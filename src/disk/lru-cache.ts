/**
 * A bounded LRU of values loaded asynchronously (L2 tables, grain tables, decompressed clusters).
 * Bounded by bytes, not entries, so a format with large tables cannot hold more memory than its
 * budget. Concurrent `get`s of one key share one load.
 */
export class LruCache<K, V> {
  private readonly entries = new Map<K, { value: V; bytes: number }>();
  private readonly loading = new Map<K, Promise<V>>();
  private bytes = 0;

  constructor(
    private readonly budgetBytes: number,
    private readonly sizeOf: (v: V) => number,
  ) {}

  async get(key: K, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit) {
      // re-insert: Map iteration order is insertion order, so the first key is the least recent
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.value;
    }
    const pending = this.loading.get(key);
    if (pending) return pending;
    const p = load();
    this.loading.set(key, p);
    try {
      const value = await p;
      this.put(key, value);
      return value;
    } finally {
      this.loading.delete(key);
    }
  }

  private put(key: K, value: V): void {
    const bytes = this.sizeOf(value);
    if (bytes > this.budgetBytes) return; // never cached, still returned
    this.entries.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [k, e] of this.entries) {
      if (this.bytes <= this.budgetBytes) break;
      this.entries.delete(k);
      this.bytes -= e.bytes;
    }
  }

  get heldBytes(): number {
    return this.bytes;
  }
}
