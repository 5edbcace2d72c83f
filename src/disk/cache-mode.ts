/**
 * qemu's cache modes, as `qemu-img convert -t` (output) and `-T` (source) name them (qemu
 * docs/system/qemu-block-drivers, "-drive cache="; `bdrv_parse_cache_mode` in block.c):
 *
 * | mode         | page cache | each write durable | flush honoured |
 * |--------------|------------|--------------------|----------------|
 * | writeback    | used       | no                 | yes            |
 * | writethrough | used       | yes (O_DSYNC)      | yes            |
 * | none         | bypassed   | no                 | yes            |
 * | directsync   | bypassed   | yes                | yes            |
 * | unsafe       | used       | no                 | no (ignored)   |
 *
 * What that means for an output file: every mode but `unsafe` flushes it (fdatasync) and its
 * directory before the rename that publishes it, as qemu flushes when it closes the image;
 * `writethrough` and `directsync` also open it O_DSYNC. `unsafe` writes and renames without any
 * flush: fastest, and what a crash may leave is an incomplete file under the final name. A
 * flushing mode also starts writing back early (`writers/output-sink.ts`: a background fdatasync
 * every 64 MiB written, or sync_file_range every 8 MiB copied by the copy engine), which changes
 * when the disk works, not what is durable when. The O_DSYNC modes never take the copy engine's
 * path: each of their writes must return once durable, and whether copy_file_range honours
 * O_DSYNC on every filesystem is not something we have checked, so they keep the plain writes.
 *
 * "bypassed" (O_DIRECT) is not done: O_DIRECT needs buffers aligned in memory, and Node.js gives no
 * way to allocate or find one. `none` and `directsync` therefore go through the page cache with
 * their durability kept (`directFallbackNote` is the message to show), as qemu itself does with
 * `cache.direct=off` where the filesystem refuses O_DIRECT. Reading a source is the same in every
 * mode (a read has nothing to flush), so `-T` changes nothing but that note.
 *
 * The writers' default is `writeback`; `imago convert` (src/cli/convert-command.ts) takes
 * qemu-img convert's defaults instead, `-t unsafe` and `-T writeback`.
 */
import { CACHE_MODES, DiskError, type CacheMode } from './disk.js';

export interface CachePolicy {
  /** fdatasync the file and fsync its directory before the rename publishes it */
  readonly flush: boolean;
  /** open O_DSYNC: each write returns once it is durable */
  readonly syncEachWrite: boolean;
}

const POLICY: Readonly<Record<CacheMode, CachePolicy>> = {
  writeback: { flush: true, syncEachWrite: false },
  writethrough: { flush: true, syncEachWrite: true },
  none: { flush: true, syncEachWrite: false },
  directsync: { flush: true, syncEachWrite: true },
  unsafe: { flush: false, syncEachWrite: false },
};

export function cachePolicy(mode: CacheMode): CachePolicy {
  return POLICY[mode];
}

/** `name` as a cache mode, or BAD_OPTION naming the flag and the modes there are. */
export function parseCacheMode(name: string, flag: string): CacheMode {
  if ((CACHE_MODES as readonly string[]).includes(name)) return name as CacheMode;
  throw new DiskError(`${flag} ${name}: unknown cache mode; use one of ${CACHE_MODES.join(', ')} (as qemu-img)`, 'BAD_OPTION');
}

/** What to tell the user when `mode` asks to bypass the page cache (see above); undefined otherwise. */
export function directFallbackNote(mode: CacheMode, flag: string): string | undefined {
  if (mode !== 'none' && mode !== 'directsync') return undefined;
  const kept = mode === 'none' ? 'flushed before the rename, as writeback' : 'each write synchronous (O_DSYNC), as writethrough';
  return `${flag} ${mode}: O_DIRECT is not used (Node.js has no aligned buffers); the page cache is used, ${kept}`;
}
