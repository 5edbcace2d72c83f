/**
 * raw — the fallback: bytes no other probe claims (the engine never probes raw). Guests read
 * them as they are: the virtual size is the file size. When the first sector carries an MBR
 * signature, the partition table (MBR or GPT) is summarised and checked (partition-table.ts).
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';
import { readPartitionTable, type PartitionTable } from './partition-table.js';

export interface RawDetails {
  partitionTable?: PartitionTable;
}

export const rawFormat: FormatDescriptor = describeFormat<RawDetails>({
  name: 'raw',
  description: 'raw disk image (fallback when no other format matches), with MBR/GPT summary',
  async probe() {
    return true;
  },
  async inspect(src, ctx) {
    const { table, findings } = await readPartitionTable(src, ctx.limits);
    const details: RawDetails = {};
    if (table) details.partitionTable = table;
    return { virtualSize: src.size === undefined ? undefined : BigInt(src.size), details, findings };
  },
  // raw has nothing of its own to check: its partition-table findings come from inspect
  checks: [],
  // Glance's raw-bytes disk formats (gpt, aki/ari/ami kernels and ramdisks) and img are raw as well
  claimAliases: ['gpt', 'aki', 'ari', 'ami', 'img'],
});
