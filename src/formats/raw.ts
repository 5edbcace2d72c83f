/**
 * raw — the fallback: bytes that no other probe claims. Placeholder until the MBR/GPT summary lands.
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';

export const rawFormat: FormatDescriptor = describeFormat({
  name: 'raw',
  description: 'raw disk image (fallback when no other format matches)',
  async probe() {
    return true;
  },
  async inspect(src) {
    return { virtualSize: src.size === undefined ? undefined : BigInt(src.size), details: {}, findings: [] };
  },
  checks: [],
});
