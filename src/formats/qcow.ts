/**
 * qcow (version 1) — the original QEMU copy-on-write format. Detected, described; a backing
 * file is refused like qcow2's.
 *
 * Spec: qemu block/qcow.c (QCowHeader). Big-endian.
 * | offset | size | field |
 * |--------|------|-------|
 * | 0  | 4 | magic "QFI\xfb" |
 * | 4  | 4 | version (1) |
 * | 8  | 8 | backing file offset |
 * | 16 | 4 | backing file size |
 * | 20 | 4 | mtime |
 * | 24 | 8 | size |
 * | 32 | 1 | cluster bits (9..16) |
 * | 33 | 1 | L2 bits |
 * | 36 | 4 | crypt method (0 none, 1 AES) |
 * | 40 | 8 | L1 table offset |
 */
import { FormatError, bytesEqual, readExact, view, type ByteSource } from './byte-source.js';
import { finding } from './findings.js';
import { describeFormat, type SafetyRule } from './format.js';

export interface QcowDetails {
  clusterBits: number;
  l2Bits: number;
  encryption: 'none' | 'aes';
  l1TableOffset: number;
  backingFile?: string;
}

const checks: SafetyRule<QcowDetails>[] = [
  {
    code: 'BACKING_FILE',
    description: 'a backing file makes the hypervisor read another file',
    run: ({ details: d }) =>
      d.backingFile === undefined
        ? []
        : [
            finding(
              'BACKING_FILE',
              `qcow image has a backing file (${JSON.stringify(d.backingFile)}); flatten it with "qemu-img convert -O qcow2 IN OUT" and upload that`,
            ),
          ],
  },
  {
    code: 'ENCRYPTED',
    description: 'legacy AES encryption',
    run: ({ details: d }) =>
      d.encryption === 'aes' ? [finding('ENCRYPTED', 'qcow image uses legacy AES encryption, which qemu no longer supports for use', 'warning')] : [],
  },
];

export const qcowFormat = describeFormat<QcowDetails>({
  name: 'qcow',
  description: 'QEMU copy-on-write version 1 (legacy)',
  async probe(src) {
    const b = await src.read(0, 8);
    return b.length === 8 && bytesEqual(b, 0, 'QFI\xfb') && view(b).getUint32(4) === 1;
  },
  async inspect(src: ByteSource) {
    const b = await readExact(src, 0, 48, 'qcow header');
    const h = view(b);
    const clusterBits = b[32]!;
    if (clusterBits < 9 || clusterBits > 16) throw new FormatError(`cluster bits ${clusterBits} is outside 9..16`, 'MALFORMED_HEADER');
    const details: QcowDetails = { clusterBits, l2Bits: b[33]!, encryption: h.getUint32(36) === 1 ? 'aes' : 'none', l1TableOffset: Number(h.getBigUint64(40)) };
    const backingOffset = h.getBigUint64(8);
    if (backingOffset !== 0n) {
      const len = Math.min(h.getUint32(16), 1023);
      details.backingFile = new TextDecoder().decode(await readExact(src, Number(backingOffset), len, 'qcow backing file name'));
    }
    return { virtualSize: h.getBigUint64(24), details, findings: [] };
  },
  checks,
});
