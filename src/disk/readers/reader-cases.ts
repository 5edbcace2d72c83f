/**
 * The reader tests against qemu as one table-driven helper: for each case (a label and the
 * qemu-img create options), a patterned image is generated with qemu-img, opened with the reader,
 * and its bytes and allocation map are compared with what qemu reads and maps.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternImage } from '../../../test/support/disk-oracle.js';
import type { DiskFormat, DiskReader } from '../disk.js';
import type { DiskFile } from '../disk-file.js';

export interface ReaderCases {
  format: DiskFormat;
  open(file: DiskFile): Promise<DiskReader>;
  /** qemu's name for the format when it differs (vhd: vpc) */
  qemuFormat?: string;
  /** [label, qemu-img create -o options] */
  cases: readonly (readonly [string, readonly string[]])[];
}

export function readerMatchesQemu({ format, open, qemuFormat = format, cases }: ReaderCases): void {
  for (const [label, opts] of cases) {
    test(`${format} ${label}: reads and maps as qemu does`, async () => {
      const file = await patternImage(`disk-${format}-${label}-v1.${format}`, qemuFormat, [...opts]);
      const r = await open(await FileSource.open(file));
      try {
        assert.equal(r.format, format);
        await assertMatchesQemu(r, file, qemuFormat);
        const ext = await allExtents(r);
        assert.ok(ext.some((e) => e.kind === 'data'));
      } finally {
        await r.close();
      }
    });
  }
}
