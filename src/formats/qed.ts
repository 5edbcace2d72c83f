/**
 * qed — placeholder descriptor: detection not written yet (probe always false).
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';

export const qedFormat: FormatDescriptor = describeFormat({
  name: 'qed',
  description: 'qed (not yet inspected)',
  async probe() {
    return false;
  },
  async inspect() {
    return { details: {}, findings: [] };
  },
  checks: [],
});
