/**
 * A test seam: bytes put straight into the blob store and the catalog as a `ready` image, past the
 * ingest pipeline. That is what a blob damaged on storage after ingest, or an image a consistency
 * rule of ingest misses, looks like to the readers behind `GET /file`. It goes through the same
 * store and repository objects the running server uses (src/app.ts), not around them.
 */
import type { App } from '../../src/app.js';
import type { DiskFormat, Image } from '../../src/domain/images/image.js';

/** `format`: the format engine's name, as ingest would have recorded it in `inspection.format`. */
export async function storeReadyImage(app: App, bytes: Uint8Array, format: string, name = 'stored-directly'): Promise<Image> {
  const session = await app.store.startUpload();
  for (let at = 0; at < bytes.length; at += 1 << 20) await session.write(bytes.subarray(at, at + (1 << 20)));
  const blob = await session.commit();
  const { image } = await app.images.create({ name, type: 'OS' });
  const ready = await app.images.repo.update(image.id, {
    state: 'ready',
    digest: blob.digest,
    storedSize: blob.sizeBytes,
    diskFormat: format as DiskFormat,
    containerFormat: 'bare',
    inspection: { format, details: {}, findings: [] },
    checksums: {},
  });
  if (!ready) throw new Error(`image ${image.id} could not be marked ready`);
  return ready;
}
