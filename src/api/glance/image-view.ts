/**
 * An Imago image as Glance's Image API v2 shows it, and Glance's vocabulary back into Imago's.
 *
 * | Glance | Imago |
 * |---|---|
 * | `status` | `glanceStatus(state)` (domain/images/lifecycle.ts) |
 * | `visibility` private | `project` (the owning project sees it) or `private` (its creator only) |
 * | `visibility` shared / public / community | `shared` / `public` / `community` |
 * | `owner` | the owning project (null for cluster scope) |
 * | `size`, `virtual_size` | `storedSize`, `virtualSize` |
 * | `checksum` / `os_hash_algo` + `os_hash_value` | md5 (when enabled) / sha512, or sha256 (the digest) when configured |
 * | `protected`, `os_hidden` | `protected`, `hidden` |
 * | `architecture`, `os_distro`, `os_version`, `os_type`, `description` | the attributes of those names |
 * | any other top-level key | a property |
 * | `imago_killed_reason` (killed images only) | `stateReason` |
 */
import type { Visibility } from '../../domain/access/policy.js';
import type { Image, OsHashAlgo } from '../../domain/images/image.js';
import { glanceStatus } from '../../domain/images/lifecycle.js';
import { importProgress, storesOf } from './import-view.js';

export type GlanceVisibility = 'public' | 'community' | 'shared' | 'private';

/**
 * Why a `killed` image was killed (Imago's state reason: the refused upload's finding, an
 * interrupted transfer, ...), shown as a property while the image is killed. Glance itself keeps
 * no such reason on the image; the name is Imago's, and read-only like Glance's own fields.
 */
export const KILLED_REASON = 'imago_killed_reason';

/** What Glance shows but never takes, on create or update (403 "read-only", as Glance). */
export const SHOWN_ONLY: ReadonlySet<string> = new Set([
  KILLED_REASON,
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
  return v === 'project' ? 'private' : v;
}

/** Glance's word for who sees an image → Imago's, for an image with (or without) a project. */
export function imagoVisibility(v: GlanceVisibility, hasProject: boolean): Visibility {
  if (v === 'private') return hasProject ? 'project' : 'private';
  return v;
}

/** Glance prints times in seconds, UTC, with a Z. */
export function glanceTime(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

/** How the door shows images: the configured os_hash_algo. */
export interface GlanceView {
  hashAlgo: OsHashAlgo;
}

/** The image's hex hash in `algo`, when it has data. */
export function osHashValue(img: Image, algo: OsHashAlgo): string | undefined {
  if (algo === 'sha512') return img.checksums.sha512;
  return img.digest?.startsWith('sha256:') ? img.digest.slice('sha256:'.length) : undefined;
}

export function glanceImage(img: Image, view: GlanceView): Record<string, unknown> {
  const out: Record<string, unknown> = { ...img.properties, ...importProgress(img) };
  for (const [key, attr] of Object.entries(ATTRIBUTE_KEYS)) if (img[attr] !== undefined) out[key] = img[attr];
  const hash = osHashValue(img, view.hashAlgo);
  Object.assign(out, {
    name: img.name ?? null,
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
    os_hash_algo: hash ? view.hashAlgo : null,
    os_hash_value: hash ?? null,
    id: img.id,
    created_at: glanceTime(img.createdAt),
    updated_at: glanceTime(img.updatedAt),
    tags: img.tags,
    self: `/v2/images/${img.id}`,
    file: `/v2/images/${img.id}/file`,
    schema: '/v2/schemas/image',
  });
  if (img.state === 'error' && img.stateReason !== undefined) out[KILLED_REASON] = img.stateReason;
  const stores = storesOf(img);
  if (stores !== undefined) out.stores = stores;
  return out;
}
