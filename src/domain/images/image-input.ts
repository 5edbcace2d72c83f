/**
 * Validation of image attributes as clients send them (REST create/PATCH; Glance later maps onto
 * the same). Every refusal names the field and what would be accepted.
 */
import { CONTAINER_FORMATS, DISK_FORMATS, IMAGE_TYPES, type ImageAttributes } from './image.js';
import { invalid } from '../errors.js';
import { VISIBILITIES, type Visibility } from '../access/policy.js';

/**
 * Properties with a known vocabulary (Glance's "useful image properties"); other keys are free-form.
 * Keys may also carry the `org.openstack.glance.` prefix, as EGI's AppDB writes them.
 */
export const PROPERTY_VOCABULARY: Record<string, readonly string[]> = {
  architecture: ['x86_64', 'i686', 'aarch64', 'armv7l', 'ppc64le', 's390x', 'riscv64', 'mips64el', 'alpha', 'sparc64'],
  os_type: ['linux', 'windows'],
  os_distro: [
    // EGI's documented oras annotation file (docs.egi.eu, "alma-9.qcow2") says `alma`
    'alma',
    'almalinux',
    'alpine',
    'arch',
    'centos',
    'cirros',
    'debian',
    'fedora',
    'freebsd',
    'gentoo',
    'netbsd',
    'openbsd',
    'opensuse',
    'rhel',
    'rocky',
    'sles',
    'ubuntu',
    'windows',
    'oraclelinux',
    'flatcar',
    'coreos',
    'talos',
    'other',
  ],
  hw_firmware_type: ['bios', 'uefi'],
  hw_disk_bus: ['virtio', 'scsi', 'ide', 'usb', 'sata', 'fdc', 'lxc', 'uml', 'xen'],
  hw_machine_type: [],
  os_secure_boot: ['required', 'disabled', 'optional'],
  hw_vif_model: ['virtio', 'e1000', 'e1000e', 'ne2k_pci', 'pcnet', 'rtl8139', 'vmxnet3', 'netfront', 'spapr-vlan'],
};

const MAX_NAME = 255;
/** C0 controls and DEL, and the bidi marks, embeddings, overrides and isolates (Trojan Source). */
// eslint-disable-next-line no-control-regex -- control characters are what this pattern refuses
const UNPRINTABLE = /[\u0000-\u001f\u007f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const MAX_PROPERTIES = 128;
const MAX_TAGS = 128;

/** `name` is absent only for a nameless image (Glance allows one; the REST door asks for a name). */
export type CreateImageInput = Partial<ImageAttributes>;

/** Where a new image goes and who sees it (not image attributes: the access policy decides on them). */
export interface OwnershipInput {
  /** a project name; null = cluster scope (server admins only); absent = the caller's only project */
  project?: string | null;
  visibility?: Visibility;
}

/** Splits `project` and `visibility` off a create or update body. */
export function takeOwnership(body: unknown): { rest: unknown; ownership: OwnershipInput } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { rest: body, ownership: {} };
  const { project, visibility, ...rest } = body as Obj;
  const ownership: OwnershipInput = {};
  if (project !== undefined) {
    if (project !== null && typeof project !== 'string')
      throw invalid('field "project" must be a project name, or null for cluster scope', { field: 'project' });
    ownership.project = project;
  }
  if (visibility !== undefined) {
    if (typeof visibility !== 'string' || !(VISIBILITIES as readonly string[]).includes(visibility)) {
      throw invalid(`field "visibility" must be one of ${VISIBILITIES.join(', ')}`, { field: 'visibility', allowed: VISIBILITIES });
    }
    ownership.visibility = visibility as Visibility;
  }
  return { rest, ownership };
}

type Obj = Record<string, unknown>;

/** The fields a client may set on an image, at creation and by update alike. */
const IMAGE_FIELDS: ReadonlySet<string> = new Set([
  'name',
  'description',
  'type',
  'diskFormat',
  'containerFormat',
  'architecture',
  'osDistro',
  'osVersion',
  'osType',
  'minDisk',
  'minRam',
  'persistent',
  'protected',
  'hidden',
  'properties',
  'tags',
]);

/** `opts.nameless`: a create without a name is allowed (Glance's null name) instead of refused. */
export function parseCreateInput(body: unknown, opts: { nameless?: boolean } = {}): CreateImageInput {
  const o = asObject(body);
  const known = IMAGE_FIELDS;
  for (const k of Object.keys(o)) if (!known.has(k)) throw invalid(`unknown field "${k}"; image fields are ${[...known].join(', ')}`, { field: k });
  if (opts.nameless && o.name === undefined) return parseAttributes(o) as CreateImageInput;
  if (typeof o.name !== 'string') throw invalid('field "name" is required: a string of 1 to 255 characters', { field: 'name' });
  return { ...parseAttributes(o), name: o.name.trim() } as CreateImageInput;
}

export function parseUpdateInput(body: unknown): Partial<ImageAttributes> {
  const o = asObject(body);
  const allowed = IMAGE_FIELDS;
  for (const k of Object.keys(o)) {
    if (!allowed.has(k)) {
      throw invalid(
        k === 'state' || k === 'digest' || k === 'id'
          ? `field "${k}" is managed by Imago and cannot be set; use the image actions (upload, disable, enable) instead`
          : `unknown field "${k}"`,
        { field: k },
      );
    }
  }
  return parseAttributes(o);
}

function parseAttributes(o: Obj): Partial<ImageAttributes> {
  const out: Partial<ImageAttributes> = {};
  if (o.name !== undefined) {
    const name = str(o, 'name').trim();
    if (name.length < 1 || name.length > MAX_NAME) throw invalid(`field "name" must be 1 to ${MAX_NAME} characters`, { field: 'name' });
    const bad = UNPRINTABLE.exec(name);
    if (bad) {
      const cp = `U+${bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
      throw invalid(
        `field "name" contains ${cp} at position ${bad.index + 1}; names must be printable: no control characters (U+0000–U+001F, U+007F) and no bidirectional formatting characters (U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), which can make a name display as another`,
        { field: 'name', character: cp },
      );
    }
    out.name = name;
  }
  if (o.description !== undefined) out.description = limited(o, 'description', 4096);
  if (o.type !== undefined) out.type = oneOf(o, 'type', IMAGE_TYPES, true);
  if (o.diskFormat !== undefined) out.diskFormat = oneOf(o, 'diskFormat', DISK_FORMATS);
  if (o.containerFormat !== undefined) out.containerFormat = oneOf(o, 'containerFormat', CONTAINER_FORMATS);
  if (o.architecture !== undefined) out.architecture = vocab('architecture', limited(o, 'architecture', 64));
  if (o.osDistro !== undefined) out.osDistro = vocab('os_distro', limited(o, 'osDistro', 64));
  if (o.osVersion !== undefined) out.osVersion = limited(o, 'osVersion', 64);
  if (o.osType !== undefined) out.osType = vocab('os_type', limited(o, 'osType', 64));
  if (o.minDisk !== undefined) out.minDisk = nonNegativeInt(o, 'minDisk');
  if (o.minRam !== undefined) out.minRam = nonNegativeInt(o, 'minRam');
  if (o.persistent !== undefined) {
    if (typeof o.persistent !== 'boolean') throw invalid('field "persistent" must be true or false', { field: 'persistent' });
    out.persistent = o.persistent;
  }
  for (const k of ['protected', 'hidden'] as const) {
    if (o[k] === undefined) continue;
    if (typeof o[k] !== 'boolean') throw invalid(`field "${k}" must be true or false`, { field: k });
    out[k] = o[k];
  }
  if (o.properties !== undefined) out.properties = parseProperties(o.properties);
  if (o.tags !== undefined) out.tags = parseTags(o.tags);
  return out;
}

/** Property keys the server alone writes (Glance's `os_glance_*`: import progress and locks); users cannot set them. */
export const RESERVED_PROPERTY_PREFIX = 'os_glance';

export function parseProperties(v: unknown): Record<string, string> {
  const o = v;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw invalid('field "properties" must be an object of string values', { field: 'properties' });
  const entries = Object.entries(o as Obj);
  if (entries.length > MAX_PROPERTIES) throw invalid(`at most ${MAX_PROPERTIES} properties per image`, { field: 'properties' });
  const out: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (!/^[A-Za-z0-9_.:@/-]{1,255}$/.test(k)) {
      throw invalid(`property key "${k}" must be 1-255 characters of letters, digits and _.:@/-`, { field: `properties.${k}` });
    }
    if (typeof val !== 'string' || val.length > 65535) throw invalid(`property "${k}" must be a string (up to 65535 characters)`, { field: `properties.${k}` });
    // Glance's reserved namespace: the server shows import progress there (os_glance_importing_to_stores, …)
    if (k.startsWith(RESERVED_PROPERTY_PREFIX))
      throw invalid(`property key "${k}" is reserved: keys starting with ${RESERVED_PROPERTY_PREFIX} are the server's; choose another name`, {
        field: `properties.${k}`,
      });
    const bare = k.startsWith('org.openstack.glance.') ? k.slice('org.openstack.glance.'.length) : k;
    // own keys only: a property named `constructor` or `toString` is free-form, not Object.prototype's
    if (Object.hasOwn(PROPERTY_VOCABULARY, bare) && PROPERTY_VOCABULARY[bare]!.length) vocab(bare, val);
    out[k] = val;
  }
  return out;
}

function parseTags(v: unknown): string[] {
  if (!Array.isArray(v)) throw invalid('field "tags" must be an array of strings', { field: 'tags' });
  if (v.length > MAX_TAGS) throw invalid(`at most ${MAX_TAGS} tags per image`, { field: 'tags' });
  const tags = new Set<string>();
  for (const t of v) {
    if (typeof t !== 'string' || t.length < 1 || t.length > 255) throw invalid('each tag must be a string of 1 to 255 characters', { field: 'tags' });
    tags.add(t);
  }
  return [...tags];
}

function vocab(key: string, value: string): string {
  const allowed = Object.hasOwn(PROPERTY_VOCABULARY, key) ? PROPERTY_VOCABULARY[key] : undefined;
  if (allowed && allowed.length > 0 && !allowed.includes(value)) {
    throw invalid(`"${value}" is not a known ${key}; use one of ${allowed.join(', ')}`, { field: key, allowed });
  }
  return value;
}

function asObject(body: unknown): Obj {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('the request body must be a JSON object');
  return body as Obj;
}

function str(o: Obj, k: string): string {
  const v = o[k];
  if (typeof v !== 'string') throw invalid(`field "${k}" must be a string`, { field: k });
  return v;
}

function limited(o: Obj, k: string, max: number): string {
  const v = str(o, k);
  if (v.length > max) throw invalid(`field "${k}" is longer than ${max} characters`, { field: k });
  return v;
}

function nonNegativeInt(o: Obj, k: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid(`field "${k}" must be a whole number ≥ 0`, { field: k });
  return v;
}

function oneOf<T extends string>(o: Obj, k: string, allowed: readonly T[], upper = false): T {
  const raw = str(o, k);
  const v = (upper ? raw.toUpperCase() : raw.toLowerCase()) as T;
  if (!allowed.includes(v)) throw invalid(`field "${k}" must be one of ${allowed.join(', ')} (got "${raw}")`, { field: k, allowed });
  return v;
}
