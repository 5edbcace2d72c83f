/**
 * SEEK_DATA / SEEK_HOLE through the small native addon in `native/` (built by `npm install` with
 * node-gyp; Node has no binding for them). Optional: when the addon is missing, or the filesystem
 * cannot answer (EINVAL), callers fall back to reading and zero detection.
 */
import { loadNativeAddon } from './native-addon.js';

interface SeekAddon {
  seekData(fd: number, offset: number): number;
  seekHole(fd: number, offset: number): number;
}

// loaded on first use (dlopen of the .node file): an inspection of a qcow2 never asks (issue 20, CLI start)
let loaded: SeekAddon | null | undefined;
function seekAddon(): SeekAddon | undefined {
  if (loaded === undefined) loaded = loadNativeAddon<SeekAddon>('seek_data') ?? null;
  return loaded ?? undefined;
}

/** Whether the addon is there (the tests check that `npm install` built it). */
export const seekSupported = (): boolean => seekAddon() !== undefined;

/**
 * The data regions of the open file `fd` inside [from, to), ascending, as [start, end) pairs;
 * undefined when the platform or filesystem cannot tell (then treat the whole range as data).
 */
export function dataRegions(fd: number, from: number, to: number): [number, number][] | undefined {
  const addon = seekAddon();
  if (!addon) return undefined;
  const out: [number, number][] = [];
  try {
    let pos = from;
    while (pos < to) {
      const d = addon.seekData(fd, pos);
      if (d < 0 || d >= to) break;
      const h = addon.seekHole(fd, d);
      const end = h < 0 ? to : Math.min(h, to);
      if (end <= d) break;
      out.push([d, end]);
      pos = end;
    }
  } catch {
    return undefined;
  }
  return out;
}
