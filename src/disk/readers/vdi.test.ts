import { readerMatchesQemu } from './reader-cases.js';
import { openVdi } from './vdi.js';

readerMatchesQemu({
  format: 'vdi',
  open: openVdi,
  cases: [
    ['dynamic', []],
    ['static', ['static=on']],
  ],
});
