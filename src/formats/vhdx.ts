/**
 * vhdx — placeholder descriptor: detection not written yet (probe always false).
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';

export const vhdxFormat: FormatDescriptor = describeFormat({
  name: 'vhdx',
  description: 'vhdx (not yet inspected)',
  async probe() {
    return false;
  },
  async inspect() {
    return { details: {}, findings: [] };
  },
  checks: [],
});
