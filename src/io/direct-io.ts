/**
 * Page-aligned buffers for O_DIRECT writes, through the small native addon in `native/`
 * (direct-io.c; built by `npm install` with node-gyp). A direct write goes from our memory to the
 * device without the kernel's page-cache copy, and leaves nothing dirty for the commit's fsync —
 * but only from page-aligned memory, in whole pages, at page-aligned file offsets. JavaScript
 * cannot see addresses, so the addon tells where a view lies; without it (not built) nothing is
 * aligned and every write goes through the page cache as before.
 */
import { loadNativeAddon } from './native-addon.js';

export const PAGE_BYTES = 4096;

interface DirectIoAddon {
  pageOffset(view: Uint8Array): number;
}

const addon = loadNativeAddon<DirectIoAddon>('direct_io');

export const directIoSupported = addon !== undefined;

/** How far `view`'s first byte lies past a page boundary; undefined without the addon. */
export function pageOffset(view: Uint8Array): number | undefined {
  return addon?.pageOffset(view);
}

/** How many of `view`'s first bytes (whole pages) can be written with O_DIRECT at file offset `position`. */
export function directPrefix(view: Uint8Array, position: number): number {
  if (position % PAGE_BYTES !== 0 || pageOffset(view) !== 0) return 0;
  return view.length - (view.length % PAGE_BYTES);
}

/** The offset into `shared` at which page-aligned memory starts (0 without the addon). */
export function alignedStart(shared: SharedArrayBuffer): number {
  const off = pageOffset(new Uint8Array(shared, 0, 1));
  return off === undefined ? 0 : (PAGE_BYTES - off) % PAGE_BYTES;
}
