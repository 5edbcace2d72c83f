/**
 * `-o key=value` options as qemu-img spells them: sizes with an optional K/M/G/T suffix (powers of
 * 1024), booleans on/off (also true/false, yes/no). An option a writer does not know is refused
 * (BAD_OPTION) rather than ignored: a typo must not silently produce another image than asked.
 */
import { DiskError } from '../disk.js';

const SUFFIX: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

export class WriterOptions {
  constructor(
    private readonly format: string,
    private readonly values: Readonly<Record<string, string>> = {},
    known: readonly string[],
  ) {
    for (const key of Object.keys(values)) {
      if (!known.includes(key)) {
        throw new DiskError(`${format} has no option '${key}'; known options: ${known.join(', ') || 'none'}`, 'BAD_OPTION');
      }
    }
  }

  string<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const v = this.values[key];
    if (v === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(v)) {
      throw new DiskError(`${this.format} option ${key}=${v} is not one of ${allowed.join(', ')}`, 'BAD_OPTION');
    }
    return v as T;
  }

  size(key: string, fallback: number): number {
    const v = this.values[key];
    if (v === undefined) return fallback;
    const m = /^(\d+)([bkmgt]?)$/i.exec(v.trim());
    const n = m ? Number(m[1]) * SUFFIX[m[2]!.toLowerCase()]! : NaN;
    if (!Number.isSafeInteger(n) || n <= 0) throw new DiskError(`${this.format} option ${key}=${v} is not a size (e.g. 65536, 64K, 2M)`, 'BAD_OPTION');
    return n;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.values[key];
    if (v === undefined) return fallback;
    if (['on', 'true', 'yes'].includes(v)) return true;
    if (['off', 'false', 'no'].includes(v)) return false;
    throw new DiskError(`${this.format} option ${key}=${v} must be on or off`, 'BAD_OPTION');
  }

  text(key: string, fallback: string): string {
    return this.values[key] ?? fallback;
  }
}

/** A power of two within [min, max], or BAD_OPTION naming the option. */
export function checkPowerOfTwo(format: string, key: string, n: number, min: number, max: number): number {
  if (n < min || n > max || (n & (n - 1)) !== 0) {
    throw new DiskError(`${format} ${key} must be a power of two between ${min} and ${max} bytes (got ${n})`, 'BAD_OPTION');
  }
  return n;
}
