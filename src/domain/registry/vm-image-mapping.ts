/**
 * OCI annotations ⇄ Imago image attributes and properties (issue 10 §3, §4), in the vocabulary of
 * the EGI Artefact Registry (docs.egi.eu "Virtual Machine Images", the `alma-9.qcow2` annotation
 * file; EGI's site sync reads the manifest's annotations, then the first layer's over them).
 *
 * Push (annotations → image), manifest annotations first, the disk layer's over them:
 *
 * | annotation | image |
 * |---|---|
 * | `org.openstack.glance.disk_format` | `diskFormat` |
 * | `org.openstack.glance.container_format` | `containerFormat` |
 * | `org.openstack.glance.architecture`, `os_distro`, `os_version`, `os_type` | `architecture`, `osDistro`, `osVersion`, `osType` |
 * | `org.openstack.glance.min_disk`, `min_ram` | `minDisk` (GiB), `minRam` (MiB) |
 * | `org.openstack.glance.<key>` (any other) | the Glance property `<key>` |
 * | `eu.egi.cloud.description` | `description` |
 * | `eu.egi.cloud.image.title`, `eu.egi.cloud.tag`, any other key | the property of the same key |
 * | `org.opencontainers.image.title` (the file's name) | kept as a property too; also `fileName` |
 *
 * Every value goes through the same validation as a REST update (image-input.ts: vocabularies,
 * lengths, at most 128 properties, keys of letters, digits and `_.:@/-`); a refusal names the
 * annotation. Glance's own fields (`id`, `name`, `status`, `visibility`, `checksum`, `size`, …) are
 * not properties: an annotation setting one is refused, as Glance refuses it.
 *
 * Pull (image → annotations) is the reverse: attributes to their `org.openstack.glance.` keys,
 * `description` to `eu.egi.cloud.description`, a property whose key has a dot (a namespaced
 * annotation: `eu.egi.cloud.tag`, `org.opencontainers.image.source`, or already
 * `org.openstack.glance.…`) as it is, any other property (a Glance property: `os_admin_user`,
 * `hw_firmware_type`, and Glance's dotted `owner_specified.openstack.*`) under
 * `org.openstack.glance.`. So a push of EGI's file pulls back the same annotations.
 */
import { DomainError, invalid } from '../errors.js';
import type { Image, ImageAttributes } from '../images/image.js';
import { parseUpdateInput } from '../images/image-input.js';

export const GLANCE_PREFIX = 'org.openstack.glance.';
export const EGI_TAG = 'eu.egi.cloud.tag';
export const EGI_TITLE = 'eu.egi.cloud.image.title';
export const EGI_DESCRIPTION = 'eu.egi.cloud.description';
export const OCI_TITLE = 'org.opencontainers.image.title';

/** Glance keys that are image attributes here, with the REST field each one sets. */
const GLANCE_ATTRIBUTES: Record<string, keyof ImageAttributes> = {
  disk_format: 'diskFormat',
  container_format: 'containerFormat',
  architecture: 'architecture',
  os_distro: 'osDistro',
  os_version: 'osVersion',
  os_type: 'osType',
  min_disk: 'minDisk',
  min_ram: 'minRam',
};

/** Glance's image fields that the server manages: never properties (Glance answers 403 "reserved"). */
const GLANCE_RESERVED = new Set([
  'id',
  'name',
  'status',
  'visibility',
  'owner',
  'checksum',
  'os_hash_algo',
  'os_hash_value',
  'size',
  'virtual_size',
  'created_at',
  'updated_at',
  'direct_url',
  'locations',
  'file',
  'schema',
  'self',
  'tags',
  'protected',
  'os_hidden',
  'stores',
]);

export interface VmImageAnnotations {
  /** the manifest's annotations */
  manifest?: Record<string, string>;
  /** the disk layer's annotations (win over the manifest's, as in EGI's sync) */
  layer?: Record<string, string>;
}

export interface MappedImage {
  /** what the push sets on the image: validated as a REST update would be */
  attributes: Partial<ImageAttributes>;
  /** `org.opencontainers.image.title`: the file's name as pushed */
  fileName?: string;
  /** `eu.egi.cloud.image.title`: the image's human title */
  title?: string;
  /** `org.openstack.glance.disk_format` as written (before validation: the claim to check the bytes against) */
  declaredDiskFormat?: string;
  /** annotation keys on both the manifest and the layer with different values: the layer's won */
  overridden: string[];
}

/** Annotations of a pushed manifest and its disk layer → what the image gets. Throws INVALID_REQUEST naming the annotation. */
export function annotationsToImage(a: VmImageAnnotations): MappedImage {
  const manifest = a.manifest ?? {};
  const layer = a.layer ?? {};
  const overridden = Object.keys(layer)
    .filter((k) => manifest[k] !== undefined && manifest[k] !== layer[k])
    .sort();
  const merged: Record<string, string> = { ...manifest, ...layer };
  const body: Record<string, unknown> = {};
  const properties: Record<string, string> = {};
  /** REST field (or `properties.<key>`) → the annotation it came from, for messages */
  const origin = new Map<string, string>();
  for (const [key, value] of Object.entries(merged)) {
    if (typeof value !== 'string') throw invalid(`annotation ${JSON.stringify(key)} must be a string`, { annotation: key });
    if (key.startsWith(GLANCE_PREFIX)) {
      const glanceKey = key.slice(GLANCE_PREFIX.length);
      if (GLANCE_RESERVED.has(glanceKey)) {
        throw invalid(`annotation ${JSON.stringify(key)} sets Glance's reserved field "${glanceKey}", which the server manages; remove it`, {
          annotation: key,
        });
      }
      const field = GLANCE_ATTRIBUTES[glanceKey];
      if (field === 'minDisk' || field === 'minRam') {
        if (!/^\d{1,9}$/.test(value))
          throw invalid(`annotation ${JSON.stringify(key)} must be a whole number ≥ 0 (got ${JSON.stringify(value)})`, { annotation: key });
        body[field] = Number(value);
        origin.set(field, key);
      } else if (field) {
        body[field] = value;
        origin.set(field, key);
      } else {
        properties[glanceKey] = value;
        origin.set(`properties.${glanceKey}`, key);
      }
    } else if (key === EGI_DESCRIPTION) {
      body.description = value;
      origin.set('description', key);
    } else {
      properties[key] = value;
      origin.set(`properties.${key}`, key);
    }
  }
  if (Object.keys(properties).length > 0) body.properties = properties;
  let attributes: Partial<ImageAttributes>;
  try {
    attributes = parseUpdateInput(body);
  } catch (e) {
    if (e instanceof DomainError && e.code === 'INVALID_REQUEST') {
      const field = typeof e.details.field === 'string' ? e.details.field : undefined;
      const annotation = field ? (origin.get(field) ?? origin.get(fieldOfVocabulary(field)) ?? origin.get(`properties.${field}`) ?? field) : undefined;
      throw invalid(annotation ? `annotation ${JSON.stringify(annotation)}: ${e.message}` : `annotations: ${e.message}`, { ...e.details, annotation });
    }
    throw e;
  }
  const out: MappedImage = { attributes, overridden };
  if (merged[OCI_TITLE] !== undefined) out.fileName = merged[OCI_TITLE];
  if (merged[EGI_TITLE] !== undefined) out.title = merged[EGI_TITLE];
  if (merged[`${GLANCE_PREFIX}disk_format`] !== undefined) out.declaredDiskFormat = merged[`${GLANCE_PREFIX}disk_format`];
  return out;
}

/** image-input's vocabulary errors name the Glance key (`os_distro`); the REST field is `osDistro`. */
function fieldOfVocabulary(key: string): string {
  const field = GLANCE_ATTRIBUTES[key];
  return field ?? key;
}

/** The image fields the annotations of a pull are made of. */
export type AnnotatedImage = Pick<
  Image,
  'description' | 'diskFormat' | 'containerFormat' | 'architecture' | 'osDistro' | 'osVersion' | 'osType' | 'minDisk' | 'minRam' | 'properties'
>;

/**
 * Image → annotations (the reverse of `annotationsToImage`); `org.opencontainers.image.title` is
 * left out (the artifact's layer carries the file name: `imageFileName`). Keys sorted.
 */
export function imageToAnnotations(image: AnnotatedImage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(image.properties)) {
    if (key === OCI_TITLE) continue;
    out[annotationKeyOfProperty(key)] = value;
  }
  const attr = (glanceKey: string, v: string | number | undefined) => {
    if (v !== undefined) out[`${GLANCE_PREFIX}${glanceKey}`] = String(v);
  };
  attr('disk_format', image.diskFormat);
  attr('container_format', image.containerFormat);
  attr('architecture', image.architecture);
  attr('os_distro', image.osDistro);
  attr('os_version', image.osVersion);
  attr('os_type', image.osType);
  if (image.minDisk > 0) attr('min_disk', image.minDisk);
  if (image.minRam > 0) attr('min_ram', image.minRam);
  if (image.description !== undefined) out[EGI_DESCRIPTION] = image.description;
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A property key as an annotation key: namespaced keys as they are, Glance properties under `org.openstack.glance.`. */
export function annotationKeyOfProperty(key: string): string {
  if (key.startsWith(GLANCE_PREFIX)) return key;
  if (key.includes('.') && !key.startsWith('owner_specified.')) return key;
  return `${GLANCE_PREFIX}${key}`;
}

const EXTENSIONS: Record<string, string> = { qcow2: 'qcow2', raw: 'img', vmdk: 'vmdk', vdi: 'vdi', vhd: 'vhd', vhdx: 'vhdx', iso: 'iso', ploop: 'hds' };
const DISK_EXTENSION = /\.(qcow2|raw|img|vmdk|vdi|vhdx?|iso|hds)$/i;

/**
 * The file name an image is pulled as. Served in its own format (`asFormat` absent or the image's
 * disk format): the pushed `org.opencontainers.image.title` when it is a plain file name, so an
 * oras pull writes the file that was pushed; else the image's name made file-safe. Served in
 * another format (a containerDisk of a vmdk image is its qcow2 variant): that name with the
 * other format's extension, so the name never declares a format the bytes are not.
 */
export function imageFileName(image: Pick<Image, 'name' | 'diskFormat' | 'properties'>, asFormat: string | undefined = image.diskFormat): string {
  const converted = asFormat !== undefined && asFormat !== (image.diskFormat ?? 'raw');
  const pushed = image.properties[OCI_TITLE]?.split(/[\\/]/).pop();
  const ext = EXTENSIONS[asFormat ?? 'raw'] ?? 'img';
  if (pushed && /^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/.test(pushed)) {
    if (!converted) return pushed;
    return `${pushed.replace(DISK_EXTENSION, '') || 'image'}.${ext}`;
  }
  const stem =
    (image.name ?? '')
      .replace(/[^A-Za-z0-9._+-]+/g, '-')
      .replace(/^[^A-Za-z0-9]+/, '')
      .slice(0, 200)
      .replace(/[-.]+$/, '') || 'image';
  return `${stem.replace(DISK_EXTENSION, '') || 'image'}.${ext}`;
}
