/**
 * QED — the QEMU Enhanced Disk format. Detected and refused: qemu deprecated it, it carries
 * backing files like qcow2, and no current cloud stores it.
 *
 * Spec: qemu docs/interop/qed_spec.txt. Little-endian.
 * | offset | size | field |
 * |--------|------|-------|
 * | 0  | 4 | magic "QED\0" |
 * | 4  | 4 | cluster size (power of two, 4 KiB..64 MiB) |
 * | 8  | 4 | table size (clusters, 1..16) |
 * | 12 | 4 | header size (clusters) |
 * | 16 | 8 | features: bit 0 backing file, 1 needs check, 2 backing format no probe |
 * | 24 | 8 | compat features |
 * | 32 | 8 | autoclear features |
 * | 40 | 8 | L1 table offset |
 * | 48 | 8 | image size |
 * | 56 | 4 | backing file name offset |
 * | 60 | 4 | backing file name size |
 */
import { readExact, view, type ByteSource } from './byte-source.js';
import { finding } from './findings.js';
import { describeFormat, type SafetyRule } from './format.js';

export interface QedDetails {
  clusterSize: number;
  tableSizeClusters: number;
  features: string[];
  l1TableOffset: number;
  backingFile?: string;
}

const checks: SafetyRule<QedDetails>[] = [
  {
    code: 'UNSUPPORTED_FORMAT',
    description: 'QED is deprecated by qemu and refused',
    run: () => [
      finding(
        'UNSUPPORTED_FORMAT',
        'QED images are refused (the format is deprecated by qemu); convert it with "qemu-img convert -O qcow2 IN OUT" and upload that',
      ),
    ],
  },
  {
    code: 'BACKING_FILE',
    description: 'a backing file makes the hypervisor read another file',
    run: ({ details: d }) =>
      d.backingFile === undefined
        ? []
        : [finding('BACKING_FILE', `QED image has a backing file (${JSON.stringify(d.backingFile)}); images must be self-contained`)],
  },
];

export const qedFormat = describeFormat<QedDetails>({
  name: 'qed',
  description: 'QEMU Enhanced Disk (detected, refused)',
  async probe(src) {
    const b = await src.read(0, 8);
    return b.length === 8 && b[0] === 0x51 && b[1] === 0x45 && b[2] === 0x44 && b[3] === 0;
  },
  async inspect(src: ByteSource) {
    const h = view(await readExact(src, 0, 64, 'QED header'));
    const features = h.getBigUint64(16, true);
    const details: QedDetails = {
      clusterSize: h.getUint32(4, true),
      tableSizeClusters: h.getUint32(8, true),
      features: [...(features & 1n ? ['backing file'] : []), ...(features & 2n ? ['needs check'] : []), ...(features & 4n ? ['backing format no probe'] : [])],
      l1TableOffset: Number(h.getBigUint64(40, true)),
    };
    if (features & 1n) {
      const off = h.getUint32(56, true);
      const len = Math.min(h.getUint32(60, true), 1023);
      const name = await src.read(off, len);
      details.backingFile = new TextDecoder().decode(name);
    }
    return { virtualSize: h.getBigUint64(48, true), details, findings: [] };
  },
  checks,
});
