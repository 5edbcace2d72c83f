import { openQed } from './qed.js';
import { readerMatchesQemu } from './reader-cases.js';

readerMatchesQemu({
  format: 'qed',
  open: openQed,
  cases: [
    ['64K', []],
    ['4K', ['cluster_size=4096']],
  ],
});
