/**
 * Glance's image update: a JSON patch (`application/openstack-images-v2.1-json-patch`, RFC 6902
 * with top-level paths only, as Glance takes it) applied to the image as Glance shows it, turned
 * into one Imago update. The refusals are Glance's: 403 on a read-only or reserved (`os_glance_*`)
 * attribute, 409 when `replace` or `remove` names a property the image does not have, 400 on an
 * operation or path Glance does not take.
 */
import type { Image } from '../../domain/images/image.js';
import { ATTRIBUTE_KEYS, imagoVisibility, SHOWN_ONLY, type GlanceVisibility } from './image-view.js';
import { GlanceError } from './error-table.js';

/** Never set by a patch: what Glance only shows, the id, and the owner (an Imago image stays in the project it was created in). */
const READ_ONLY: ReadonlySet<string> = new Set([...SHOWN_ONLY, 'id', 'owner']);

/** Core attributes: replaced, never removed. */
const CORE: Record<string, string> = {
  name: 'name',
  visibility: 'visibility',
  protected: 'protected',
  os_hidden: 'hidden',
  disk_format: 'diskFormat',
  container_format: 'containerFormat',
  min_disk: 'minDisk',
  min_ram: 'minRam',
  tags: 'tags',
};

/** Glance changes these only while the image has no data (status queued). */
const QUEUED_ONLY = new Set(['disk_format', 'container_format']);

export const PATCH_MEDIA_TYPES = ['application/openstack-images-v2.1-json-patch', 'application/openstack-images-v2.0-json-patch'] as const;

export const RESERVED_PREFIX = 'os_glance';

export interface ImageChanges {
  /** attributes in Imago's names, for the domain's parseUpdateInput */
  attrs: Record<string, unknown>;
  /** attributes of their own (architecture, ...) that the patch removed, and `name` when set to null */
  cleared: string[];
  visibility?: ReturnType<typeof imagoVisibility>;
}

export function applyImagePatch(img: Image, body: unknown): ImageChanges {
  if (!Array.isArray(body)) throw new GlanceError(400, 'Request body must be a JSON array of operation objects.');
  // the document the patch edits: what Glance shows that can change
  const core: Record<string, unknown> = {
    name: img.name ?? null,
    visibility: undefined,
    protected: img.protected === true,
    os_hidden: img.hidden === true,
    disk_format: img.diskFormat ?? null,
    container_format: img.containerFormat ?? null,
    min_disk: img.minDisk,
    min_ram: img.minRam,
    tags: img.tags,
  };
  // keys come from the client: a map without a prototype, and own-key lookups only (`/constructor`, `/__proto__`)
  const extra: Record<string, unknown> = Object.assign(Object.create(null) as Record<string, unknown>, img.properties);
  for (const [key, attr] of Object.entries(ATTRIBUTE_KEYS)) if (img[attr] !== undefined) extra[key] = img[attr];
  const touched = new Set<string>();
  const removed = new Set<string>();

  for (const change of body) {
    if (typeof change !== 'object' || change === null || Array.isArray(change)) throw new GlanceError(400, 'Operations must be JSON objects.');
    const { op, path, value } = change as { op?: unknown; path?: unknown; value?: unknown };
    if (op !== 'add' && op !== 'replace' && op !== 'remove') {
      throw new GlanceError(400, `Invalid operation: \`${String(op).slice(0, 40)}\`; use add, replace or remove.`);
    }
    const key = pointerKey(path);
    if (key.startsWith(RESERVED_PREFIX)) throw new GlanceError(403, `Attribute '${key}' is reserved.`);
    if (READ_ONLY.has(key)) throw new GlanceError(403, `Attribute '${key}' is read-only.`);
    if (op !== 'remove' && !('value' in (change as object))) throw new GlanceError(400, `Operation "${op}" requires a member named "value".`);
    if (QUEUED_ONLY.has(key) && img.state !== 'pending') throw new GlanceError(403, `Attribute ${key} can be only replaced for a queued image.`);
    if (Object.hasOwn(CORE, key)) {
      if (op === 'remove') throw new GlanceError(403, `Properties ${key} can not be removed: it is a core attribute.`);
      core[key] = value;
      touched.add(key);
      continue;
    }
    if (op === 'add') {
      extra[key] = value;
      removed.delete(key);
    } else if (!Object.hasOwn(extra, key)) {
      throw new GlanceError(409, `Property ${key} does not exist.`);
    } else if (op === 'replace') {
      extra[key] = value;
    } else {
      delete extra[key];
      removed.add(key);
    }
    touched.add(key);
  }

  const out: ImageChanges = { attrs: {}, cleared: [] };
  const properties = Object.create(null) as Record<string, unknown>;
  let propertiesTouched = false;
  for (const [k, v] of Object.entries(extra)) {
    const attr = attributeOf(k);
    if (attr) {
      if (touched.has(k)) out.attrs[attr] = v;
    } else properties[k] = v;
  }
  for (const k of touched) {
    if (Object.hasOwn(CORE, k)) {
      if (k === 'visibility') out.visibility = visibilityOf(core.visibility, img.project !== undefined);
      // Glance's name may be null: the image becomes nameless
      else if (k === 'name' && core.name === null) out.cleared.push('name');
      else out.attrs[CORE[k]!] = core[k] === null && (k === 'disk_format' || k === 'container_format') ? undefined : core[k];
    } else if (!attributeOf(k)) propertiesTouched = true;
  }
  for (const k of removed) {
    const attr = attributeOf(k);
    if (attr) out.cleared.push(attr);
  }
  if (propertiesTouched) out.attrs.properties = properties;
  return out;
}

/** The Imago attribute a top-level Glance key names (architecture → architecture, os_distro → osDistro), if any. */
export function attributeOf(key: string): string | undefined {
  return Object.hasOwn(ATTRIBUTE_KEYS, key) ? (ATTRIBUTE_KEYS as Record<string, string>)[key] : undefined;
}

export function visibilityOf(v: unknown, hasProject: boolean): ImageChanges['visibility'] {
  if (v !== 'private' && v !== 'shared' && v !== 'public' && v !== 'community')
    throw new GlanceError(400, `Invalid visibility value: ${String(v).slice(0, 40)}`);
  return imagoVisibility(v as GlanceVisibility, hasProject);
}

/** A JSON pointer of one segment (Glance takes top-level paths only). */
function pointerKey(path: unknown): string {
  if (typeof path !== 'string' || !path.startsWith('/')) throw new GlanceError(400, 'Pointer must start with "/" and name a top-level attribute.');
  const segment = path.slice(1);
  if (segment === '' || segment.includes('/')) throw new GlanceError(400, `Invalid JSON pointer for this resource: '${path.slice(0, 100)}'`);
  if (/~[^01]|~$/.test(segment)) throw new GlanceError(400, `Pointer \`${path.slice(0, 100)}\` contains "~" not part of a recognized escape sequence.`);
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}
