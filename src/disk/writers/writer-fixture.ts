/**
 * The writer tests' shared setup: the sample disk, a scratch directory, and the disk written out
 * as raw (`expected`, what every output must compare equal to). Registers its own before/after
 * hooks in the calling test file; read `dir` and `expected` inside tests (they are set by then).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { sampleDisk, type MemoryDisk } from '../../../test/support/memory-disk.js';

export interface WriterFixture {
  readonly disk: MemoryDisk;
  /** scratch directory, removed after the file's tests */
  readonly dir: string;
  /** the sample disk as a raw file */
  readonly expected: string;
}

export function writerFixture(format: string): WriterFixture {
  const fx = { disk: sampleDisk(), dir: '', expected: '' };
  before(async () => {
    fx.dir = await mkdtemp(join(tmpdir(), `imago-${format}-`));
    fx.expected = join(fx.dir, 'expected.raw');
    await fx.disk.toRawFile(fx.expected);
  });
  after(async () => {
    await rm(fx.dir, { recursive: true, force: true });
  });
  return fx;
}
