import { readerMatchesQemu } from './reader-cases.js';
import { openVhd } from './vhd.js';

readerMatchesQemu({
  format: 'vhd',
  qemuFormat: 'vpc',
  open: openVhd,
  cases: [
    ['dynamic', ['subformat=dynamic']],
    ['fixed', ['subformat=fixed']],
    ['dynamic-force-size', ['subformat=dynamic', 'force_size=on']],
  ],
});
