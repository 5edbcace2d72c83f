/**
 * The one place a blob backend is picked: from a URL (`file:///srv/imago`, `fs:/srv/imago`) or a
 * plain directory path, the filesystem store (blobs under `<dir>/blobs/sha256/..`). Later
 * backends (`s3://bucket/prefix`) are added here and nowhere else; an unknown scheme is refused.
 */
import { normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlobStore } from './blob-store.js';
import { FsBlobStore } from './fs-blob-store.js';

export function blobStoreFromUrl(urlOrDir: string): BlobStore {
  if (urlOrDir.startsWith('file:')) return new FsBlobStore(fileURLToPath(urlOrDir));
  if (urlOrDir.startsWith('fs:')) return new FsBlobStore(normalize(urlOrDir.slice('fs:'.length)));
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(urlOrDir)?.[1];
  if (scheme) throw new Error(`blob storage "${scheme}://..." is not supported; use a directory (or file:// URL)`);
  return new FsBlobStore(normalize(urlOrDir));
}
