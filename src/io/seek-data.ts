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

const addon = loadNativeAddon<SeekAddon>('seek_data');

export const seekSupported = addon !== undefined;

/**
 * The data regions of the open file `fd` inside [from, to), ascending, as [start, end) pairs;
 * undefined when the platform or filesystem cannot tell (then treat the whole range as data).
 */
export function dataRegions(fd: number, from: number, to: number): [number, number][] | undefined {
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
