/**
 * `imago convert` and `imago compare` — local verbs on image files, with qemu-img's flags.
 *
 *   imago convert [-f FMT] -O FMT [-o key=value,...] [-c] [-p] [-q] [-t CACHE] [-T SRC_CACHE]
 *                 [--allow-extent-dir DIR] IN OUT
 *     Exit 0 converted; 1 the source is refused by the safety checks (the findings are printed);
 *     2 any other error (unknown format or option, missing file, I/O). A failed or interrupted
 *     conversion leaves no OUT (the writer commits `OUT.part` by rename only when complete).
 *     -t / -T take qemu's cache modes with qemu-img convert's defaults (`-t unsafe`: no flush;
 *     `-t writeback` flushes OUT before the rename); see src/disk/cache-mode.ts.
 *
 *   imago compare [-f FMT] [-F FMT] [-s] [-q] A B
 *     As `qemu-img compare`: exit 0 "Images are identical.", 1 "Content mismatch at offset N!"
 *     (N: the start of the first differing 512-byte sector, as qemu names it; or, with -s, a size
 *     or block status mismatch), 2 on error with what was wrong.
 *
 * `-o` may be repeated; inside one value a literal comma is written `,,` as qemu-img does.
 */
import type { Command } from 'commander';
import { CACHE_MODES, DiskError, type CacheMode, type DiskReader } from '../disk/disk.js';
import { progressBar } from './progress-bar.js';

// The disk engine is imported by the action that runs it, each verb what it needs, so that
// `imago --version`, `--help` and the other verbs start without it (docs/BENCHMARKS.md, issue 20).
const convertEngine = async () => {
  const [cacheMode, convert] = await Promise.all([import('../disk/cache-mode.js'), import('../disk/convert.js')]);
  return { ...cacheMode, ...convert };
};
const compareEngine = async () => {
  const [compare, openDisk] = await Promise.all([import('../disk/compare.js'), import('../disk/open-disk.js')]);
  return { ...compare, ...openDisk };
};

/**
 * qemu-img convert's defaults (qemu-img.c `img_convert`: `cache = "unsafe"`, `src_cache =
 * BDRV_DEFAULT_CACHE`): the output is not flushed unless `-t` asks (docs/BENCHMARKS.md, issue 20).
 */
const OUTPUT_CACHE_DEFAULT: CacheMode = 'unsafe';
const SOURCE_CACHE_DEFAULT: CacheMode = 'writeback';

export const EXIT_OK = 0;
/** convert: the source was refused; compare: the images differ */
export const EXIT_REFUSED_OR_DIFFERENT = 1;
export const EXIT_ERROR = 2;

interface ConvertFlags {
  format?: string;
  outputFormat: string;
  options?: string[];
  compress?: boolean;
  progress?: boolean;
  quiet?: boolean;
  allowExtentDir?: string;
  snapshot?: string;
  cache: string;
  sourceCache: string;
}

interface CompareFlags {
  format?: string;
  secondFormat?: string;
  strict?: boolean;
  quiet?: boolean;
  allowExtentDir?: string;
}

const SECTOR = 512;

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function registerConvert(program: Command, setExit: (code: number) => void): void {
  program
    .command('convert')
    .description('convert a disk image to another format (safety checks first; sparseness kept)')
    .argument('<input>', 'source image file')
    .argument('<output>', 'output image file (written as OUTPUT.part, renamed when complete)')
    .option('-f, --format <fmt>', 'format the source is declared as; must match its bytes (default: detected)')
    .requiredOption('-O, --output-format <fmt>', 'output format: raw, qcow2, vmdk, vdi, vhd (vpc), vhdx, ova')
    .option('-o, --options <key=value,...>', 'output format options, e.g. cluster_size=2M or subformat=monolithicSparse (repeatable)', collect)
    .option('-c, --compress', 'compress the output (qcow2; vmdk streamOptimized and ova always are)')
    .option('-p, --progress', 'show a progress bar on stderr')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--allow-extent-dir <dir>', "read a descriptor VMDK's extent files from this directory")
    .option('-l, --snapshot <id-or-name>', 'qcow2 source: convert this internal snapshot instead of the active layer')
    .option('-t, --cache <mode>', `output cache mode, as qemu-img: ${CACHE_MODES.join(', ')} (unsafe: no flush)`, OUTPUT_CACHE_DEFAULT)
    .option('-T, --source-cache <mode>', 'source cache mode, as qemu-img', SOURCE_CACHE_DEFAULT)
    .action(async (input: string, output: string, flags: ConvertFlags) => {
      setExit(await runConvert(input, output, flags));
    });
  program
    .command('compare')
    .description('compare the guest contents of two disk images (exit 0 identical, 1 different, 2 error)')
    .argument('<a>', 'first image file')
    .argument('<b>', 'second image file')
    .option('-f, --format <fmt>', 'format the first image is declared as')
    .option('-F, --second-format <fmt>', 'format the second image is declared as')
    .option('-s, --strict', 'images of different sizes, or data where the other has none, differ')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--allow-extent-dir <dir>', "read descriptor VMDKs' extent files from this directory")
    .action(async (a: string, b: string, flags: CompareFlags) => {
      setExit(await runCompare(a, b, flags));
    });
}

/** `-o a=1,b=2` (repeatable; `,,` is a literal comma) → { a: '1', b: '2' }. */
export function parseOptionList(values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const value of values) {
    for (const item of value.split(/(?<!,),(?!,)/).map((s) => s.replace(/,,/g, ','))) {
      if (item === '') continue;
      const eq = item.indexOf('=');
      if (eq <= 0) throw new DiskError(`option "${item}" is not key=value (e.g. -o cluster_size=64K,subformat=monolithicSparse)`, 'BAD_OPTION');
      const key = item.slice(0, eq).trim();
      if (key in out) throw new DiskError(`option ${key} is given twice`, 'BAD_OPTION');
      out[key] = item.slice(eq + 1);
    }
  }
  return out;
}

export async function runConvert(input: string, output: string, flags: ConvertFlags): Promise<number> {
  const ac = new AbortController();
  const onSignal = () => ac.abort(new DiskError('interrupted', 'IO'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = flags.progress && !flags.quiet ? progressBar('converting') : undefined;
  try {
    const { convertFile, directFallbackNote, parseCacheMode } = await convertEngine();
    const options = parseOptionList(flags.options ?? []);
    const cache = parseCacheMode(flags.cache, '-t');
    const sourceCache = parseCacheMode(flags.sourceCache, '-T');
    if (!flags.quiet) {
      for (const note of [directFallbackNote(cache, '-t'), directFallbackNote(sourceCache, '-T')]) {
        if (note) process.stderr.write(`imago convert: ${note}\n`);
      }
    }
    await convertFile(input, output, {
      cache,
      ...(flags.format === undefined ? {} : { inFormat: flags.format }),
      outFormat: flags.outputFormat,
      options,
      compress: flags.compress === true,
      ...(bar ? { onProgress: (p: { done: number; total: number }) => bar.update(p.done, p.total) } : {}),
      signal: ac.signal,
      ...(flags.allowExtentDir === undefined ? {} : { allowExtentDir: flags.allowExtentDir }),
      ...(flags.snapshot === undefined ? {} : { snapshot: flags.snapshot }),
    });
    bar?.end();
    return EXIT_OK;
  } catch (e) {
    bar?.end();
    return reportError('convert', e);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

export async function runCompare(a: string, b: string, flags: CompareFlags): Promise<number> {
  const say = (line: string) => {
    if (!flags.quiet) process.stdout.write(`${line}\n`);
  };
  const readers: DiskReader[] = [];
  try {
    const { compareDisks, openDisk } = await compareEngine();
    const open = (path: string, format: string | undefined) =>
      openDisk(path, {
        ...(format === undefined ? {} : { format }),
        ...(flags.allowExtentDir === undefined ? {} : { allowExtentDir: flags.allowExtentDir }),
        allowDeprecatedFormats: true,
      });
    readers.push(await open(a, flags.format));
    readers.push(await open(b, flags.secondFormat));
    const [ra, rb] = readers as [DiskReader, DiskReader];
    const r = await compareDisks(ra, rb, { strict: flags.strict === true });
    // qemu sizes disks in whole sectors: sizes within one sector of each other are not a mismatch to it
    const sectors = (n: number) => Math.ceil(n / SECTOR);
    const sizeWarning = r.sizeMismatch !== undefined && sectors(r.sizeMismatch.a) !== sectors(r.sizeMismatch.b);
    if (r.identical) {
      if (sizeWarning) say('Warning: Image size mismatch!');
      say('Images are identical.');
      return EXIT_OK;
    }
    if (r.firstDifference === undefined) {
      say('Strict mode: Image size mismatch!');
      return EXIT_REFUSED_OR_DIFFERENT;
    }
    if (sizeWarning && !flags.strict) say('Warning: Image size mismatch!');
    const at = r.firstDifference;
    // strict mode also differs where one image stores data and the other none: same bytes there
    const same = flags.strict && at < Math.min(ra.virtualSize, rb.virtualSize) && (await ra.read(at, 1))[0] === (await rb.read(at, 1))[0];
    // qemu-img compares whole sectors and names the sector holding the first difference
    const sectorAt = Math.floor(at / SECTOR) * SECTOR;
    say(same ? `Strict mode: Offset ${sectorAt} block status mismatch!` : `Content mismatch at offset ${sectorAt}!`);
    return EXIT_REFUSED_OR_DIFFERENT;
  } catch (e) {
    return reportError('compare', e);
  } finally {
    for (const r of readers) await r.close().catch(() => undefined);
  }
}

/** Prints what was wrong; a refused source lists its findings one per line. */
function reportError(verb: string, e: unknown): number {
  const msg = e instanceof Error ? e.message : String(e);
  if (e instanceof DiskError && e.code === 'UNSAFE_IMAGE') {
    const m = /^(.*) is refused by the safety checks: (.*)$/s.exec(msg);
    if (m) {
      const findings = m[2]!.split(/; (?=[A-Z][A-Z0-9_]+: )/);
      process.stderr.write(`imago ${verb}: ${m[1]} is refused by the safety checks:\n${findings.map((f) => `  ERROR ${f}\n`).join('')}`);
    } else {
      process.stderr.write(`imago ${verb}: ${msg}\n`);
    }
    return verb === 'convert' ? EXIT_REFUSED_OR_DIFFERENT : EXIT_ERROR;
  }
  process.stderr.write(`imago ${verb}: ${msg}\n`);
  return EXIT_ERROR;
}
