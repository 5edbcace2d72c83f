/**
 * qcow2 — placeholder descriptor: detection not written yet (probe always false).
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';

export const qcow2Format: FormatDescriptor = describeFormat({
  name: 'qcow2',
  description: 'qcow2 (not yet inspected)',
  async probe() {
    return false;
  },
  async inspect() {
    return { details: {}, findings: [] };
  },
  checks: [],
});
