/**
 * OVA reader: the first disk of an OVF package (a tar), read in place through a window of the
 * tar — nothing is extracted.
 *
 * Spec: DMTF DSP0243 §5.3 (OVA = ustar archive, OVF descriptor first); tar headers as
 * src/formats/tar.ts. The disk is the first regular member whose name ends in `.vmdk` (OVF
 * packages carry streamOptimized VMDKs); it is opened with the VMDK reader over a window
 * [dataOffset, dataOffset + size) of the archive, so the VMDK's own checks apply inside.
 *
 * Invariants (DiskError): a well-formed tar (checksums, sizes inside the file), a disk member
 * that is a plain file with a relative name without `..`, at most DISK_LIMITS.maxOvaMembers members.
 */
import { SliceSource } from '../../formats/ova.js';
import { readTarMembers } from '../../formats/tar.js';
import { DiskError, type DiskReader } from '../disk.js';
import { owning, type DiskFile } from '../disk-file.js';
import { DISK_LIMITS } from '../limits.js';
import { openVmdk } from './vmdk.js';

const MAX_NAME_RECORD_BYTES = 64 * 1024;

export async function openOva(file: DiskFile): Promise<DiskReader> {
  return owning(file, () => open(file));
}

async function open(file: DiskFile): Promise<DiskReader> {
  const { members } = await readTarMembers(file, DISK_LIMITS.maxOvaMembers, MAX_NAME_RECORD_BYTES);
  const disk = members.find((m) => m.type === 'file' && /\.vmdk$/i.test(m.name));
  if (!disk)
    throw new DiskError(
      `OVA has no VMDK disk member (members: ${
        members
          .map((m) => m.name)
          .slice(0, 10)
          .join(', ') || 'none'
      })`,
    );
  if (disk.name.startsWith('/') || disk.name.split('/').includes('..'))
    throw new DiskError(`OVA disk member name ${JSON.stringify(disk.name)} is not a safe relative name`, 'UNSAFE_IMAGE');
  if (disk.dataOffset + disk.size > file.size)
    throw new DiskError(`OVA disk member ${disk.name} (${disk.size} bytes at ${disk.dataOffset}) runs past the end of the archive`);
  const slice = new SliceSource(file, disk.dataOffset, disk.size);
  const member: DiskFile = {
    size: disk.size,
    read: (offset, length) => slice.read(offset, length),
    close: async () => {
      await file.close?.();
    },
  };
  const inner = await openVmdk(member);
  // the reader reports the container format; the bytes are the VMDK's
  return {
    format: 'ova',
    virtualSize: inner.virtualSize,
    ...(inner.clusterSize === undefined ? {} : { clusterSize: inner.clusterSize }),
    read: (offset, length) => inner.read(offset, length),
    extents: (offset, length) => inner.extents(offset, length),
    close: () => inner.close(),
  };
}
