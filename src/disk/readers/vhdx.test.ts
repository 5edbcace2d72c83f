import { readerMatchesQemu } from './reader-cases.js';
import { openVhdx } from './vhdx.js';

readerMatchesQemu({
  format: 'vhdx',
  open: openVhdx,
  cases: [
    ['dynamic', ['subformat=dynamic']],
    ['fixed', ['subformat=fixed']],
    ['block-8M', ['block_size=8388608']],
    ['log-1M', ['log_size=1048576']],
  ],
});
