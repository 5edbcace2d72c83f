/**
 * Frees the memory of dropped stream buffers sooner than V8 would by itself.
 *
 * A streaming server allocates a fresh Buffer for every socket read, every decoder output chunk
 * and every child-process pipe read, and drops it a moment later. V8 gives an ArrayBuffer's
 * memory back only when a garbage collection finds it dead, and it starts a collection for
 * memory held outside its heap only after about 64 MiB more has been allocated there since the
 * last one. Until then the dead buffers stay in the process's RSS: through ten concurrent
 * decompression bombs that was 60–90 MiB of the server's peak (issue 18, item 3).
 *
 * When enabled (`imago serve` does), the ingest path reports the bytes it has passed on, and every
 * `stepBytes` of them, process-wide, a young-generation collection runs: with the 1 MiB
 * semi-spaces the server keeps, a scavenge takes well under a millisecond, and the buffers of a
 * stream are young when they die. Disabled (tests, the CLI), `passed()` costs one comparison.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let collect: GcFunction | undefined;
let step = 0;
let since = 0;

/** Turns the relief on for this process (V8's `gc` function, which `--expose-gc` provides to new contexts). */
export function enableMemoryRelief(stepBytes = 16 * 1024 * 1024): void {
  if (collect) return;
  setFlagsFromString('--expose-gc');
  collect = runInNewContext('gc') as GcFunction;
  step = stepBytes;
}

/** `bytes` of stream data were passed on (and their buffers dropped). */
export function passedBytes(bytes: number): void {
  if (!collect) return;
  since += bytes;
  if (since >= step) {
    since = 0;
    collect({ type: 'minor' });
  }
}
