/**
 * MBR and GPT partition tables: a summary for raw disks and hybrid ISOs, and the checks that
 * catch malformed or hybrid tables.
 *
 * Spec: UEFI Specification 2.10 §5.2 (legacy and protective MBR) and §5.3 (GPT header and entry
 * array); oslo.utils format_inspector.py GPTInspector for the protective-MBR rule. Little-endian.
 *
 * MBR (sector 0): entries at 446 + 16·i — status (0x00 or 0x80), CHS start (3), type, CHS end
 * (3), first LBA u32, sector count u32; signature 55 AA at 510.
 * GPT header (LBA 1): "EFI PART", revision, header size (92..sector), header CRC-32, my LBA,
 * alternate LBA, first/last usable LBA, disk GUID, entry array LBA, entry count, entry size
 * (128·2^n), entry array CRC-32. Entries: type GUID, unique GUID, first LBA, last LBA,
 * attributes, name (72 bytes UTF-16LE).
 *
 * Only the first `MAX_GPT_ENTRIES` entries are read (the UEFI minimum array is 128), whatever
 * the header claims beyond our limit.
 */
import { readExact, type ByteSource, view } from './byte-source.js';
import { crc32 } from './crc32.js';
import { finding, type Finding } from './findings.js';
import type { InspectLimits } from './limits.js';
import { guid } from './vhdx.js';

const SECTOR = 512;
const MAX_GPT_ENTRIES = 256;

const MBR_TYPES: Record<number, string> = {
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'extended',
  0x06: 'FAT16',
  0x07: 'NTFS/exFAT',
  0x0b: 'FAT32',
  0x0c: 'FAT32 (LBA)',
  0x0e: 'FAT16 (LBA)',
  0x0f: 'extended (LBA)',
  0x17: 'hidden NTFS',
  0x27: 'Windows recovery',
  0x82: 'Linux swap',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xa5: 'FreeBSD',
  0xa6: 'OpenBSD',
  0xa9: 'NetBSD',
  0xee: 'GPT protective',
  0xef: 'EFI System',
  0xfd: 'Linux RAID',
};

const GPT_TYPES: Record<string, string> = {
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI System',
  '21686148-6449-6e6f-744e-656564454649': 'BIOS boot',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
  'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'Microsoft reserved',
  'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
  'e6d6d379-f507-44c2-a23c-238f2a3df928': 'Linux LVM',
  'a19d880f-05fc-4d3b-a006-743f0f84911e': 'Linux RAID',
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'Linux root (x86-64)',
  'b921b045-1df0-41c3-af44-4c6f280d3fae': 'Linux root (ARM64)',
  'bc13c2ff-59e6-4262-a352-b275fd6f7172': 'Linux extended boot',
  '933ac7e1-2eb4-4f13-b844-0e14e2aef915': 'Linux home',
  '516e7cb4-6ecf-11d6-8ff8-00022d09712b': 'FreeBSD data',
  '48465300-0000-11aa-aa11-00306543ecac': 'Apple HFS+',
};

export interface MbrPartition {
  index: number;
  bootable: boolean;
  status: number;
  type: number;
  typeName: string;
  firstLba: number;
  sectors: number;
}

export interface GptPartition {
  index: number;
  typeGuid: string;
  typeName: string;
  uniqueGuid: string;
  firstLba: number;
  lastLba: number;
  attributes: string;
  name: string;
}

export interface PartitionTable {
  scheme: 'mbr' | 'gpt';
  mbr: MbrPartition[];
  protectiveMbr: boolean;
  hybridMbr: boolean;
  gpt?: {
    diskGuid: string;
    revision: string;
    sectorSize: number;
    firstUsableLba: number;
    lastUsableLba: number;
    alternateLba: number;
    entryCount: number;
    entrySize: number;
    partitions: GptPartition[];
  };
}

/** Reads the partition table of a disk (or a hybrid ISO's system area); undefined when there is no MBR signature. */
export async function readPartitionTable(src: ByteSource, limits: InspectLimits): Promise<{ table?: PartitionTable; findings: Finding[] }> {
  const findings: Finding[] = [];
  const s0 = await src.read(0, SECTOR);
  if (s0.length < SECTOR || s0[510] !== 0x55 || s0[511] !== 0xaa) return { findings };
  const v = view(s0);
  const mbr: MbrPartition[] = [];
  for (let i = 0; i < 4; i++) {
    const at = 446 + i * 16;
    const type = s0[at + 4]!;
    const sectors = v.getUint32(at + 12, true);
    if (type === 0 && sectors === 0) continue;
    mbr.push({
      index: i + 1,
      status: s0[at]!,
      bootable: s0[at] === 0x80,
      type,
      typeName: MBR_TYPES[type] ?? `0x${type.toString(16)}`,
      firstLba: v.getUint32(at + 8, true),
      sectors,
    });
  }
  // a FAT/NTFS boot sector also ends in 55 AA: with no sane entry at all it is not a partition table
  if (mbr.length === 0) return { findings };
  for (const p of mbr) {
    if (p.status !== 0 && p.status !== 0x80) {
      findings.push(
        finding('MBR_MALFORMED', `MBR entry ${p.index} has status byte 0x${p.status.toString(16)} (only 0x00 and 0x80 are valid); repair the partition table`),
      );
    }
  }
  const prot = mbr.filter((p) => p.type === 0xee);
  const table: PartitionTable = { scheme: 'mbr', mbr, protectiveMbr: false, hybridMbr: false };
  const disk = src.size === undefined ? undefined : Math.floor(src.size / SECTOR);
  if (prot.length > 0) {
    table.protectiveMbr = true;
    const gpt = await readGpt(src, limits, findings);
    if (gpt) {
      table.scheme = 'gpt';
      table.gpt = gpt;
    }
    if (prot.length > 1) findings.push(finding('MBR_MALFORMED', 'more than one GPT protective (0xEE) entry in the MBR; repair the partition table'));
    if (prot[0]!.firstLba !== 1)
      findings.push(finding('MBR_MALFORMED', `the GPT protective MBR entry starts at LBA ${prot[0]!.firstLba}, not 1; repair the partition table`));
    const others = mbr.filter((p) => p.type !== 0xee);
    if (others.length > 0) {
      table.hybridMbr = true;
      findings.push(
        finding(
          'HYBRID_MBR',
          `hybrid MBR: besides the GPT protective entry it describes ${others.length} partition(s) (${others.map((p) => p.typeName).join(', ')}); ` +
            `firmware may see different partitions than the OS — fine for isohybrid media, unusual on a disk`,
          'warning',
        ),
      );
    }
  } else if (disk !== undefined) {
    for (const p of mbr) {
      if (p.firstLba + p.sectors > disk) {
        findings.push(
          finding(
            'MBR_MALFORMED',
            `MBR partition ${p.index} (${p.typeName}) ends at sector ${p.firstLba + p.sectors}, past the ${disk}-sector disk; the image is truncated or the table is wrong`,
          ),
        );
      }
    }
  }
  const sorted = mbr.filter((p) => p.type !== 0xee && p.sectors > 0).sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (sorted[i]!.firstLba < prev.firstLba + prev.sectors && prev.type !== 0x05 && prev.type !== 0x0f && prev.type !== 0x85) {
      findings.push(finding('MBR_MALFORMED', `MBR partitions ${prev.index} and ${sorted[i]!.index} overlap; repair the partition table`));
    }
  }
  return { table, findings };
}

async function readGpt(src: ByteSource, limits: InspectLimits, findings: Finding[]): Promise<PartitionTable['gpt'] | undefined> {
  for (const sectorSize of [512, 4096]) {
    const hb = await src.read(sectorSize, 512);
    if (hb.length < 92 || !String.fromCharCode(...hb.subarray(0, 8)).startsWith('EFI PART')) continue;
    const h = view(hb);
    const headerSize = h.getUint32(12, true);
    if (headerSize < 92 || headerSize > 512) {
      findings.push(finding('GPT_MALFORMED', `GPT header size ${headerSize} is outside 92..512; repair the partition table`));
      return undefined;
    }
    if (crc32(hb.subarray(0, headerSize), 16, 4) !== h.getUint32(16, true)) {
      findings.push(finding('GPT_MALFORMED', 'GPT header CRC-32 does not match; the partition table is damaged — repair it (e.g. sgdisk -e / gdisk)'));
    }
    const firstUsable = h.getBigUint64(40, true);
    const lastUsable = h.getBigUint64(48, true);
    const entriesLba = h.getBigUint64(72, true);
    const count = h.getUint32(80, true);
    const entrySize = h.getUint32(84, true);
    if (entrySize < 128 || (entrySize & (entrySize - 1)) !== 0 || entrySize > 4096) {
      findings.push(finding('GPT_MALFORMED', `GPT entry size ${entrySize} is not 128 × 2^n; repair the partition table`));
      return undefined;
    }
    if (count > limits.maxTableEntries)
      findings.push(finding('OVER_LIMIT', `GPT declares ${count} partition entries, over the limit of ${limits.maxTableEntries}`));
    const arrayBytes = BigInt(count) * BigInt(entrySize);
    const arrayOffset = entriesLba * BigInt(sectorSize);
    if (src.size !== undefined && arrayOffset + arrayBytes > BigInt(src.size)) {
      findings.push(finding('GPT_MALFORMED', `GPT entry array at LBA ${entriesLba} (${arrayBytes} bytes) runs past the end of the disk`));
      return undefined;
    }
    const readCount = Math.min(count, MAX_GPT_ENTRIES);
    const arr = await readExact(src, Number(arrayOffset), readCount * entrySize, 'GPT partition entries');
    if (readCount === count && crc32(arr) !== h.getUint32(88, true)) {
      findings.push(finding('GPT_MALFORMED', 'GPT partition entry array CRC-32 does not match; the partition table is damaged — repair it'));
    }
    const partitions: GptPartition[] = [];
    const dec = new TextDecoder('utf-16le');
    for (let i = 0; i < readCount; i++) {
      const e = arr.subarray(i * entrySize, i * entrySize + 128);
      if (e.subarray(0, 16).every((x) => x === 0)) continue;
      const ev = view(e);
      const typeGuid = guid(e.subarray(0, 16));
      partitions.push({
        index: i + 1,
        typeGuid,
        typeName: GPT_TYPES[typeGuid] ?? 'unknown',
        uniqueGuid: guid(e.subarray(16, 32)),
        firstLba: Number(ev.getBigUint64(32, true)),
        lastLba: Number(ev.getBigUint64(40, true)),
        attributes: `0x${ev.getBigUint64(48, true).toString(16)}`,
        name: dec.decode(e.subarray(56, 128)).replace(/\0.*$/s, ''),
      });
    }
    const sorted = [...partitions].sort((a, b) => a.firstLba - b.firstLba);
    for (const p of sorted) {
      if (p.lastLba < p.firstLba || BigInt(p.firstLba) < firstUsable || BigInt(p.lastLba) > lastUsable) {
        findings.push(
          finding('GPT_MALFORMED', `GPT partition ${p.index} (LBA ${p.firstLba}..${p.lastLba}) lies outside the usable range ${firstUsable}..${lastUsable}`),
        );
      }
    }
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]!.firstLba <= sorted[i - 1]!.lastLba)
        findings.push(finding('GPT_MALFORMED', `GPT partitions ${sorted[i - 1]!.index} and ${sorted[i]!.index} overlap`));
    }
    return {
      diskGuid: guid(hb.subarray(56, 72)),
      revision: `${h.getUint16(10, true)}.${h.getUint16(8, true)}`,
      sectorSize,
      firstUsableLba: Number(firstUsable),
      lastUsableLba: Number(lastUsable),
      alternateLba: Number(h.getBigUint64(32, true)),
      entryCount: count,
      entrySize,
      partitions,
    };
  }
  findings.push(finding('MBR_MALFORMED', 'protective MBR (0xEE) without a GPT header at LBA 1; the disk claims GPT but has none — repair the partition table'));
  return undefined;
}
