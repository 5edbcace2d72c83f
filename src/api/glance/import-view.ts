/**
 * Glance's interoperable import, as this door shows it: the import methods it offers, its one
 * store, and the import progress properties an image shows — derived from the one lifecycle,
 * never stored (users cannot set `os_glance_*` keys; see `RESERVED_PROPERTY_PREFIX`).
 *
 * | Imago | Glance |
 * |---|---|
 * | URL import (`ingestKind` import) running | `os_glance_importing_to_stores: "default"`, `os_glance_failed_import: ""` |
 * | URL import or staged import ended `ready` | both `""` (as Glance leaves them after a successful import) |
 * | URL import ended in `error` | `os_glance_importing_to_stores: ""`, `os_glance_failed_import: "default"` |
 * | staged, not yet imported; plain uploads | neither key |
 * | image data stored (`ready`, `disabled`, `locked`) | `stores: "default"` |
 *
 * `os_glance_stage_host` is not among them: Glance records it for its own workers and never shows
 * it (its `_hidden_properties`); Imago stages into its one store, reachable from every node.
 */
import type { Image } from '../../domain/images/image.js';

/** The id of Imago's one store, as `/v2/info/stores` lists it and `stores` names it. */
export const STORE_ID = 'default';

/** The import methods this door offers, in Glance's order (`/v2/info/import`). */
export const IMPORT_METHODS = ['glance-direct', 'web-download', 'copy-image'] as const;
export type ImportMethod = (typeof IMPORT_METHODS)[number];

export const IMPORTING_TO_STORES = 'os_glance_importing_to_stores';
export const FAILED_IMPORT = 'os_glance_failed_import';

/** The import progress properties the image shows, none when it was never imported. */
export function importProgress(img: Image): Record<string, string> {
  if (img.ingestKind === 'import') {
    if (img.state === 'importing') return { [IMPORTING_TO_STORES]: STORE_ID, [FAILED_IMPORT]: '' };
    if (img.state === 'error') return { [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: STORE_ID };
    return { [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: '' };
  }
  if (img.ingestKind === 'stage' && img.state !== 'importing' && img.state !== 'staged' && img.state !== 'error') {
    return { [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: '' };
  }
  return {};
}

/** The stores holding the image's data (Glance's `stores`, shown when there are several-store deployments): ours, or none yet. */
export function storesOf(img: Image): string | undefined {
  return img.digest && (img.state === 'ready' || img.state === 'disabled' || img.state === 'locked') ? STORE_ID : undefined;
}
