/**
 * An Imago image as Glance's Image API v2 shows it, and Glance's vocabulary back into Imago's.
 *
 * | Glance | Imago |
 * |---|---|
 * | `status` | `glanceStatus(state)` (domain/images/lifecycle.ts) |
 * | `visibility` private | `project` (the owning project sees it) or `private` (its creator only) |
 * | `visibility` shared / public | `shared` / `public`; `community` is not offered yet |
 * | `owner` | the owning project (null for cluster scope) |
 * | `size`, `virtual_size` | `storedSize`, `virtualSize` |
 * | `checksum` / `os_hash_algo` + `os_hash_value` | md5 (when enabled) / sha512 |
 * | `protected`, `os_hidden` | `protected`, `hidden` |
 * | `architecture`, `os_distro`, `os_version`, `os_type`, `description` | the attributes of those names |
 * | any other top-level key | a property |
 */
import type { Visibility } from '../../domain/access/policy.js';
import type { Image } from '../../domain/images/image.js';
import { glanceStatus } from '../../domain/images/lifecycle.js';
import { importProgress, storesOf } from './import-view.js';

export type GlanceVisibility = 'public' | 'community' | 'shared' | 'private';

/** What Glance shows but never takes, on create or update (403 "read-only", as Glance). */
export const SHOWN_ONLY: ReadonlySet<string> = new Set([
  'status',
  'checksum',
  'os_hash_algo',
  'os_hash_value',
  'size',
  'virtual_size',
  'created_at',
  'updated_at',
  'self',
  'file',
  'schema',
  'direct_url',
  'stores',
  'locations',
]);

/** Top-level keys that are Imago attributes of their own (everything else free-form is a property). */
export const ATTRIBUTE_KEYS = {
  architecture: 'architecture',
  os_distro: 'osDistro',
  os_version: 'osVersion',
  os_type: 'osType',
  description: 'description',
} as const satisfies Record<string, keyof Image>;

export function glanceVisibility(v: Visibility): GlanceVisibility {
  return v === 'public' ? 'public' : v === 'shared' ? 'shared' : 'private';
}

/** Glance's word for who sees an image → Imago's, for an image with (or without) a project. */
export function imagoVisibility(v: GlanceVisibility, hasProject: boolean): Visibility {
  if (v === 'private') return hasProject ? 'project' : 'private';
  if (v === 'community') throw new Error('community visibility is checked by the caller');
  return v;
}

/** Glance prints times in seconds, UTC, with a Z. */
export function glanceTime(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

export function glanceImage(img: Image): Record<string, unknown> {
  const out: Record<string, unknown> = { ...img.properties, ...importProgress(img) };
  for (const [key, attr] of Object.entries(ATTRIBUTE_KEYS)) if (img[attr] !== undefined) out[key] = img[attr];
  const sha512 = img.checksums.sha512;
  Object.assign(out, {
    name: img.name,
    disk_format: img.diskFormat ?? null,
    container_format: img.containerFormat ?? null,
    visibility: glanceVisibility(img.visibility),
    size: img.storedSize ?? null,
    virtual_size: img.virtualSize ?? null,
    status: glanceStatus(img),
    checksum: img.checksums.md5 ?? null,
    protected: img.protected === true,
    min_ram: img.minRam,
    min_disk: img.minDisk,
    owner: img.project ?? null,
    os_hidden: img.hidden === true,
    os_hash_algo: sha512 ? 'sha512' : null,
    os_hash_value: sha512 ?? null,
    id: img.id,
    created_at: glanceTime(img.createdAt),
    updated_at: glanceTime(img.updatedAt),
    tags: img.tags,
    self: `/v2/images/${img.id}`,
    file: `/v2/images/${img.id}/file`,
    schema: '/v2/schemas/image',
  });
  const stores = storesOf(img);
  if (stores !== undefined) out.stores = stores;
  return out;
}
