/**
 * OVA writer — an OVF package in one ustar file, as EGI's appliance guidelines ask: the OVF
 * descriptor first, then the disk as a streamOptimized VMDK, then a manifest of SHA256 digests.
 *
 * Spec: DMTF DSP0243 "Open Virtualization Format Specification" 1.1/2.x — §5.3 (OVA: a tar whose
 * first member is the descriptor; files in References order; manifest after), §5.1 (manifest lines
 * `SHA256(file)= hex`), §7 (References/File ovf:href, ovf:size), §9.1 (DiskSection/Disk ovf:capacity
 * in bytes, ovf:format the VMDK streamOptimized URI), §9.5 and DSP1043/CIM RASD for the hardware
 * items (rasd elements in the schema's alphabetical order). Tar: POSIX.1-2017 ustar headers
 * (src/formats/tar.ts is the reader's table); a member over 8 GiB − 1 gets a GNU base-256 size.
 *
 * | member | contents |
 * |--------|----------|
 * | NAME.ovf        | the descriptor (OVF 1.0 envelope: References, DiskSection, NetworkSection, VirtualSystem with CPUs, memory, an IDE controller, the disk and a NAT NIC) |
 * | NAME-disk1.vmdk | the disk, streamOptimized (vmdk.ts) |
 * | NAME.mf         | `SHA256(NAME.ovf)= …` and `SHA256(NAME-disk1.vmdk)= …` |
 *
 * Not streamable: the descriptor (first) carries the VMDK's size, and the VMDK's tar header its
 * length, both known only once the VMDK is compressed. So the VMDK is written to a scratch file
 * beside the target (`<path>.vmdk.part`, deleted in every case) and copied in, hashed as it passes.
 * Options: name (default: the file name without .ova), cpus (1), memory_mb (1024).
 */
import { basename } from 'node:path';
import { DiskError, type DiskReader, type DiskWriter, type OutputTarget, type WriteOptions, type WriteResult } from '../disk.js';
import { alignUp } from './data-blocks.js';
import { FileSink, type SequentialSink, withOutput } from './output-sink.js';
import { writeStreamOptimized } from './vmdk.js';
import { WriterOptions } from './write-options.js';

// node:crypto and node:fs/promises are loaded when an OVA is written: every conversion and every
// comparison imports every writer (issue 20, CLI start)

const BLOCK = 512;
const COPY_CHUNK = 4 * 1024 * 1024;
/** largest size an 11-digit octal field holds */
const MAX_OCTAL_SIZE = 8 ** 11 - 1;
const VMDK_STREAM_URI = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';
const OPTIONS = ['name', 'cpus', 'memory_mb'] as const;

/** ustar header fields (offset, length) */
const T_NAME = [0, 100] as const;
const T_MODE = [100, 8] as const;
const T_UID = [108, 8] as const;
const T_GID = [116, 8] as const;
const T_SIZE = [124, 12] as const;
const T_MTIME = [136, 12] as const;
const T_CHECKSUM = [148, 8] as const;
const T_TYPEFLAG = 156;
const T_MAGIC = [257, 6] as const;
const T_VERSION = [263, 2] as const;
const T_UNAME = [265, 32] as const;
const T_GNAME = [297, 32] as const;

function putText(b: Uint8Array, [at, len]: readonly [number, number], s: string): void {
  if (s.length > len) throw new DiskError(`tar field too long: ${s}`, 'BAD_OPTION');
  for (let i = 0; i < s.length; i++) b[at + i] = s.charCodeAt(i);
}

function putOctal(b: Uint8Array, field: readonly [number, number], n: number): void {
  putText(b, field, n.toString(8).padStart(field[1] - 1, '0'));
}

/** A ustar header for a regular file (mode 0644, owner root). */
export function tarHeader(name: string, size: number, mtime = Math.floor(Date.now() / 1000)): Uint8Array {
  const b = new Uint8Array(BLOCK);
  putText(b, T_NAME, name);
  putOctal(b, T_MODE, 0o644);
  putOctal(b, T_UID, 0);
  putOctal(b, T_GID, 0);
  if (size <= MAX_OCTAL_SIZE) {
    putOctal(b, T_SIZE, size);
  } else {
    // GNU base-256: bit 7 of the first byte set, the size big-endian in the rest of the field.
    const [at, len] = T_SIZE;
    let n = BigInt(size);
    for (let i = len - 1; i > 0; i--, n >>= 8n) b[at + i] = Number(n & 0xffn);
    b[at] = 0x80;
  }
  putOctal(b, T_MTIME, mtime);
  b[T_TYPEFLAG] = 0x30; // '0' regular file
  putText(b, T_MAGIC, 'ustar\0');
  putText(b, T_VERSION, '00');
  putText(b, T_UNAME, 'root');
  putText(b, T_GNAME, 'root');
  // The checksum is the byte sum with the checksum field read as spaces, written as 6 octal digits, NUL, space.
  b.fill(0x20, T_CHECKSUM[0], T_CHECKSUM[0] + T_CHECKSUM[1]);
  let sum = 0;
  for (const x of b) sum += x;
  putText(b, T_CHECKSUM, `${sum.toString(8).padStart(6, '0')}\0 `);
  return b;
}

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface OvfParams {
  readonly name: string;
  readonly diskFile: string;
  readonly diskFileSize: number;
  readonly capacity: number;
  readonly cpus: number;
  readonly memoryMb: number;
}

function item(fields: Record<string, string | number | boolean>): string {
  // CIM RASD elements must appear in the schema's (alphabetical) order.
  const body = Object.keys(fields)
    .sort()
    .map((k) => `        <rasd:${k}>${xml(String(fields[k]))}</rasd:${k}>`)
    .join('\n');
  return `      <Item>\n${body}\n      </Item>`;
}

export function ovfDescriptor(p: OvfParams): string {
  const name = xml(p.name);
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:id="file1" ovf:href="${xml(p.diskFile)}" ovf:size="${p.diskFileSize}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="${p.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="${VMDK_STREAM_URI}"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${name}">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-07 virtualbox-2.2</vssd:VirtualSystemType>
      </System>
${item({ AllocationUnits: 'hertz * 10^6', Description: 'Number of virtual CPUs', ElementName: `${p.cpus} virtual CPU`, InstanceID: 1, ResourceType: 3, VirtualQuantity: p.cpus })}
${item({ AllocationUnits: 'byte * 2^20', Description: 'Memory Size', ElementName: `${p.memoryMb} MB of memory`, InstanceID: 2, ResourceType: 4, VirtualQuantity: p.memoryMb })}
${item({ Address: 0, Description: 'IDE Controller', ElementName: 'ideController0', InstanceID: 3, ResourceSubType: 'PIIX4', ResourceType: 5 })}
${item({ AddressOnParent: 0, ElementName: 'disk1', HostResource: 'ovf:/disk/vmdisk1', InstanceID: 4, Parent: 3, ResourceType: 17 })}
${item({ AutomaticAllocation: true, Connection: 'NAT', ElementName: 'ethernet0', InstanceID: 5, ResourceSubType: 'E1000', ResourceType: 10 })}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}

function settings(opts: WriteOptions, target: OutputTarget): { name: string; cpus: number; memoryMb: number } {
  const o = new WriterOptions('ova', opts.options, OPTIONS);
  const fallback = target.kind === 'file' ? basename(target.path).replace(/\.ova$/i, '') : 'disk';
  const name =
    o
      .text('name', fallback)
      .replace(/[^A-Za-z0-9._-]/g, '_')
      .slice(0, 80) || 'disk';
  const cpus = o.size('cpus', 1);
  const memoryMb = o.size('memory_mb', 1024);
  return { name, cpus, memoryMb };
}

export const ovaWriter: DiskWriter = {
  format: 'ova',
  streamable: false,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const s = settings(opts, target);
    if (target.kind !== 'file') {
      throw new DiskError(
        "ova cannot be written to a stream (the descriptor and tar header need the compressed disk's size first); write it to a file",
        'UNSUPPORTED',
      );
    }
    const diskFile = `${s.name}-disk1.vmdk`;
    const ovfFile = `${s.name}.ovf`;
    const mfFile = `${s.name}.mf`;
    const scratch = await FileSink.open(`${target.path}.vmdk`);
    try {
      await writeStreamOptimized(src, scratch.sequential(0), { fileName: diskFile, adapter: 'ide', hwVersion: '4' }, opts);
      await scratch.settle();
      const bytesWritten = await withOutput(target, 'ova', false, opts, async (out) => {
        if (out.kind !== 'file') return;
        const sink = out.file.sequential(0);
        const diskSize = (await process.getBuiltinModule('node:fs/promises').stat(scratch.partPath)).size;
        const ovf = new TextEncoder().encode(ovfDescriptor({ ...s, diskFile, diskFileSize: diskSize, capacity: src.virtualSize }));
        const ovfDigest = process.getBuiltinModule('node:crypto').createHash('sha256').update(ovf).digest('hex');
        await member(sink, ovfFile, ovf);
        await sink.write(tarHeader(diskFile, diskSize));
        const diskDigest = await copyHashed(scratch.partPath, sink, opts.signal);
        await sink.writeZeros(alignUp(diskSize, BLOCK) - diskSize);
        const mf = new TextEncoder().encode(`SHA256(${ovfFile})= ${ovfDigest}\nSHA256(${diskFile})= ${diskDigest}\n`);
        await member(sink, mfFile, mf);
        // End of archive: two zero blocks.
        await sink.write(new Uint8Array(2 * BLOCK));
      });
      return { bytesWritten };
    } finally {
      await scratch.abort();
    }
  },
};

async function member(sink: SequentialSink, name: string, data: Uint8Array): Promise<void> {
  await sink.write(tarHeader(name, data.length));
  await sink.write(data);
  await sink.writeZeros(alignUp(data.length, BLOCK) - data.length);
}

async function copyHashed(path: string, sink: SequentialSink, signal: AbortSignal | undefined): Promise<string> {
  const hash = process.getBuiltinModule('node:crypto').createHash('sha256');
  const fh = await process.getBuiltinModule('node:fs/promises').open(path, 'r');
  try {
    for (let at = 0; ;) {
      signal?.throwIfAborted();
      const buf = new Uint8Array(COPY_CHUNK);
      const { bytesRead } = await fh.read(buf, 0, COPY_CHUNK, at);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      hash.update(chunk);
      await sink.write(chunk);
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}
