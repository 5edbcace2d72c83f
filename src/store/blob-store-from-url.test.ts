import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { blobStoreFromUrl } from './blob-store-from-url.js';

test('blobStoreFromUrl: a directory, a file:// URL or fs: picks the filesystem store; an unknown scheme is refused', () => {
  assert.equal(blobStoreFromUrl('/srv/imago').description, 'fs:/srv/imago');
  assert.equal(blobStoreFromUrl(pathToFileURL('/srv/imago data').href).description, 'fs:/srv/imago data');
  assert.equal(blobStoreFromUrl('fs:/srv/imago').description, 'fs:/srv/imago');
  assert.equal(blobStoreFromUrl('./imago-data').description, 'fs:imago-data');
  assert.throws(() => blobStoreFromUrl('gopher://host/x'), /blob storage "gopher:\/\/\.\.\." is not supported/);
});
