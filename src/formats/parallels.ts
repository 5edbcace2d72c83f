/**
 * parallels — placeholder descriptor: detection not written yet (probe always false).
 */
import type { FormatDescriptor } from './format.js';
import { describeFormat } from './format.js';

export const parallelsFormat: FormatDescriptor = describeFormat({
  name: 'parallels',
  description: 'parallels (not yet inspected)',
  async probe() {
    return false;
  },
  async inspect() {
    return { details: {}, findings: [] };
  },
  checks: [],
});
