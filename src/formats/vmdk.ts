/**
 * vmdk — placeholder descriptor: detection not written yet (probe always false).
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';

export const vmdkFormat: FormatDescriptor = describeFormat({
  name: 'vmdk',
  description: 'vmdk (not yet inspected)',
  async probe() {
    return false;
  },
  async inspect() {
    return { details: {}, findings: [] };
  },
  checks: [],
});
