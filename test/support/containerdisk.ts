/** Real containerDisks, built by ../shared/peers/make-containerdisk.sh (no container engine needed). */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const MAKE_CONTAINERDISK = resolve(import.meta.dirname, '..', '..', '..', 'shared', 'peers', 'make-containerdisk.sh');

export interface BuiltContainerDisk {
  ociDir: string;
  manifest: { config: { mediaType: string; digest: string }; layers: { mediaType: string; digest: string; size: number }[] };
  layerPath: string;
}

/** make-containerdisk.sh DISK OCI_DIR TAG COMPRESSION, and where its layer blob is. */
export function makeContainerDisk(disk: string, ociDir: string, compression: 'gzip' | 'zstd' | 'none', tag = 'v1'): BuiltContainerDisk {
  execFileSync('bash', [MAKE_CONTAINERDISK, disk, ociDir, tag, compression], { stdio: 'pipe' });
  const index = JSON.parse(readFileSync(join(ociDir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
  const entry = index.manifests.find((m) => m.annotations['org.opencontainers.image.ref.name'] === tag)!;
  const blob = (d: string) => join(ociDir, 'blobs', 'sha256', d.slice('sha256:'.length));
  const manifest = JSON.parse(readFileSync(blob(entry.digest), 'utf8')) as BuiltContainerDisk['manifest'];
  return { ociDir, manifest, layerPath: blob(manifest.layers[0]!.digest) };
}

/**
 * Writes an OCI image layout (`oci:DIR:TAG` for skopeo) holding `manifest` and `blobs` (each stored
 * under its own sha256), the manifest tagged `tag` in index.json.
 */
export function writeOciLayout(
  dir: string,
  manifest: { bytes: Uint8Array; digest: string; size: number; mediaType: string },
  blobs: Uint8Array[],
  tag = 'v1',
): void {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const b of [...blobs, manifest.bytes]) writeFileSync(join(dir, 'blobs', 'sha256', createHash('sha256').update(b).digest('hex')), b);
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const ref = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size, annotations: { 'org.opencontainers.image.ref.name': tag } };
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [ref] }));
}
