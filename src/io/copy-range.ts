/**
 * Kernel-side copies for the converters, through the native addon `native/copy-range.c`: `scan`
 * finds which granules of file ranges hold data (a byte that is not zero), and `copy` moves byte
 * runs from one file to another with copy_file_range(2) — page cache to page cache, never through
 * Node's heap — optionally starting the output's writeback as it goes (sync_file_range). Both run
 * on libuv's thread pool. Optional like the other addons: `copyEngine()` is undefined when it did
 * not build, and the writers then read and write through Node as before.
 */
import { constants } from 'node:os';
import { loadNativeAddon } from './native-addon.js';

interface CopyAddon {
  scan(fd: number, ranges: Float64Array, granule: number): Promise<Uint8Array>;
  copy(srcFd: number, dstFd: number, runs: Float64Array, startWriteback: boolean): Promise<number>;
}

export interface CopyEngine {
  /**
   * For each range [fileOffset, guestOffset, length] of the open file `fd`, cut at the multiples
   * of `granule` in guest space: one byte per granule, ranges one after the other, 1 when the
   * granule holds a byte that is not zero. Bytes past the end of the file read zeros.
   */
  scan(fd: number, ranges: readonly (readonly [number, number, number])[], granule: number): Promise<Uint8Array>;
  /**
   * Copies each run [srcOffset, dstOffset, length] from `srcFd` to `dstFd`; resolves with the bytes
   * copied (fewer only when the source ended first). `startWriteback`: start writing the copied
   * ranges to the device as the copy goes (for an output that will be flushed).
   */
  copy(srcFd: number, dstFd: number, runs: readonly (readonly [number, number, number])[], startWriteback: boolean): Promise<number>;
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** The addon's errors carry the errno in decimal; give them the name Node uses (EIO, ENOSPC, ...). */
function named(e: unknown): unknown {
  if (e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string') {
    const n = Number((e as NodeJS.ErrnoException).code);
    const name = ERRNO_NAMES.get(n);
    if (name !== undefined) Object.assign(e, { code: name, errno: -n });
  }
  return e;
}

function flat(triples: readonly (readonly [number, number, number])[]): Float64Array {
  const out = new Float64Array(triples.length * 3);
  triples.forEach((t, i) => out.set(t, i * 3));
  return out;
}

/** The engine of the addon `name` (see loadNativeAddon), or undefined when it cannot be loaded; tests load one from elsewhere to see the fallback. */
export function loadCopyEngine(name = 'copy_range'): CopyEngine | undefined {
  const addon = loadNativeAddon<CopyAddon>(name);
  if (!addon) return undefined;
  return {
    scan: (fd, ranges, granule) => addon.scan(fd, flat(ranges), granule).catch((e: unknown) => Promise.reject(named(e))),
    copy: (srcFd, dstFd, runs, startWriteback) => addon.copy(srcFd, dstFd, flat(runs), startWriteback).catch((e: unknown) => Promise.reject(named(e))),
  };
}

let loaded: { engine: CopyEngine | undefined } | undefined;

/** The process's engine, loaded on first use; undefined when the addon did not build. */
export function copyEngine(): CopyEngine | undefined {
  loaded ??= { engine: loadCopyEngine() };
  return loaded.engine;
}
