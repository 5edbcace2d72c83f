/**
 * Test fixtures made with the real qemu-img (the oracle), cached under .cache/fixtures so a
 * second run reuses them. Nothing here is a mock: these are the files qemu writes.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, existsSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const FIXTURE_DIR = resolve(process.env.IMAGO_FIXTURE_DIR ?? join(import.meta.dirname, '..', '..', '.cache', 'fixtures'));

export function fixturePath(name: string): string {
  mkdirSync(FIXTURE_DIR, { recursive: true });
  return join(FIXTURE_DIR, name);
}

export async function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const { stdout } = await run(cmd, args, { maxBuffer: 64 * 1024 * 1024, cwd: opts.cwd });
  return stdout;
}

/**
 * Makes a fixture once: `make(tmpPath)` writes the file, which is then renamed into place, so a
 * test killed half-way never leaves a half-made fixture behind.
 */
export async function cached(name: string, make: (out: string) => Promise<void>): Promise<string> {
  const out = fixturePath(name);
  if (existsSync(out)) return out;
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { force: true, recursive: true });
  await make(tmp);
  renameSync(tmp, out);
  return out;
}

/** `qemu-img create -f FMT [-o OPTS] FILE SIZE` (cached by name). */
export async function qemuCreate(name: string, fmt: string, size: string, options: string[] = []): Promise<string> {
  return cached(name, async (tmp) => {
    const args = ['create', '-q', '-f', fmt];
    for (const o of options) args.push('-o', o);
    args.push(tmp, size);
    await sh('qemu-img', args);
  });
}

/** A qcow2 whose backing file is a path on the machine (`<prefix>-overlay.qcow2`): the classic hostile upload. */
export async function qcow2WithBacking(prefix: string): Promise<string> {
  const base = await qemuCreate(`${prefix}-base.qcow2`, 'qcow2', '64M');
  return cached(`${prefix}-overlay.qcow2`, async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]);
  });
}

/** `qemu-img convert` of `src` into FMT (cached by name). */
export async function qemuConvert(name: string, src: string, fmt: string, options: string[] = [], extra: string[] = []): Promise<string> {
  return cached(name, async (tmp) => {
    const args = ['convert', '-q', ...extra, '-O', fmt];
    for (const o of options) args.push('-o', o);
    args.push(src, tmp);
    await sh('qemu-img', args);
  });
}

export interface QemuInfo {
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'format-specific'?: { type: string; data: Record<string, unknown> };
  [k: string]: unknown;
}

/** `qemu-img info --output=json` — the oracle. `fmt` forces a format (qemu's probe misses e.g. fixed VHD). */
export async function qemuInfo(file: string, fmt?: string): Promise<QemuInfo> {
  const args = ['info', '--output=json', '-U'];
  if (fmt) args.push('-f', fmt);
  args.push(file);
  return JSON.parse(await sh('qemu-img', args)) as QemuInfo;
}

/** A small raw disk with deterministic, non-zero content in a few places (cached). */
export async function patternedRaw(name: string, sizeBytes: number): Promise<string> {
  return cached(name, async (tmp) => {
    const { open } = await import('node:fs/promises');
    const fh = await open(tmp, 'w');
    try {
      await fh.truncate(sizeBytes);
      const block = Buffer.alloc(64 * 1024);
      for (let i = 0; i < block.length; i++) block[i] = (i * 131 + 7) & 0xff;
      for (const at of [0, Math.floor(sizeBytes / 3), sizeBytes - block.length]) {
        if (at >= 0 && at + block.length <= sizeBytes) await fh.write(block, 0, block.length, at);
      }
    } finally {
      await fh.close();
    }
  });
}
