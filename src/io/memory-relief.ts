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
 * `stepBytes` of them, process-wide, a young-generation collection runs: with the 4 MiB young
 * generation the server holds (below), a scavenge takes well under a millisecond, and the buffers of a
 * stream are young when they die. Disabled (tests, the CLI), `passed()` costs one comparison.
 *
 * It also holds V8's young generation at a fixed size (`youngBytes`, both semi-spaces; 4 MiB by
 * default) instead of the 1 → 32 MiB V8 grows it to. Grown, the spaces themselves and the dead
 * Buffers between two collections added ~30–50 MiB to the peak of ten concurrent decompression
 * bombs (issue 18). Held at 2 MiB (V8's start size; issue 18 first set
 * `--semi-space-growth-factor=1` for this), a plain 1 GiB upload promoted its in-flight chunks and
 * paid ~40 full mark-compacts per GiB, 0.5 s of a 2.2 s upload (issue 20). At 4 MiB neither
 * happens: 2 mark-compacts in 3 GiB, and the bombs' peak below what 2 MiB gave. V8 sizes the young
 * generation only from its start flags (`--max-semi-space-size` is read once) but reads the growth
 * factor each time it grows or after it shrank the spaces: so the spaces are grown to the size by
 * allocating at enable time, frozen with a growth factor of 1, and re-steered every `stepBytes`
 * (grow again with the default factor 2 if V8 shrank them while idle).
 *
 * And it lets the old generation grow to twice its live size before a mark-compact
 * (`--heap-growing-percent=100`; V8 picks 1.1–2 by itself). V8 counts the memory allocated outside
 * its heap since the last mark-compact against the old generation's limit: under 100 concurrent
 * uploads every socket read's Buffer counts, the ~30 MiB heap's limit was passed every ~25 MiB of
 * traffic, and the server ran 140–176 mark-compacts for 6.4 GiB (2–2.5 s of pauses, up to
 * 100–200 ms each on a loaded machine); at 2× it ran 67. 4× (300) ran 27, but then the dead buffers
 * promoted between two mark-compacts raised ten concurrent decompression bombs' peak past issue
 * 18's 250 MiB (test/bombs.test.ts: 244–251 MiB; 224–234 at 2× and without).
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let collect: GcFunction | undefined;
let step = 0;
let since = 0;
let young = 0;
let frozen: boolean | undefined;

/** Bytes of both semi-spaces V8 has committed now. */
export function youngGenerationBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}

/** Growth factor 1 (frozen) once the young generation has the size, V8's default 2 while it is smaller. */
function steerYoungGeneration(): void {
  const freeze = youngGenerationBytes() >= young;
  if (freeze === frozen) return;
  setFlagsFromString(`--semi-space-growth-factor=${freeze ? 1 : 2}`);
  frozen = freeze;
}

/** Allocates short-lived objects with some survivors until V8 grows the young generation to `young` (bounded). */
function growYoungGeneration(): void {
  let keep: object[] = [];
  for (let round = 0; round < 500 && youngGenerationBytes() < young; round++) {
    for (let i = 0; i < 2000; i++) {
      keep.push({ i, a: [i] });
      if (keep.length > 50_000) keep = [];
    }
  }
}

/**
 * Turns the relief on for this process (V8's `gc` function, which `--expose-gc` provides to new
 * contexts) and holds the young generation at `youngBytes`.
 */
export function enableMemoryRelief(stepBytes = 16 * 1024 * 1024, youngBytes = 4 * 1024 * 1024): void {
  if (collect) return;
  setFlagsFromString('--expose-gc');
  setFlagsFromString('--heap-growing-percent=100');
  collect = runInNewContext('gc') as GcFunction;
  step = stepBytes;
  young = youngBytes;
  steerYoungGeneration();
  growYoungGeneration();
  steerYoungGeneration();
}

/** `bytes` of stream data were passed on (and their buffers dropped). */
export function passedBytes(bytes: number): void {
  if (!collect) return;
  since += bytes;
  if (since >= step) {
    since = 0;
    collect({ type: 'minor' });
    steerYoungGeneration();
  }
}
