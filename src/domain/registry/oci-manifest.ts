/**
 * Manifests as the registry accepts them: bytes → the facts it records (media type, artifact type,
 * subject, what it references), or MANIFEST_INVALID naming the rule broken. Pure.
 *
 * Media types (OCI image spec v1.1 `manifest.md`, `image-index.md`, `descriptor.md`; Docker image
 * manifest v2 schema 2):
 *
 * | media type | kind | references |
 * |---|---|---|
 * | application/vnd.oci.image.manifest.v1+json | image | `config`, `layers[]` (blobs), optional `subject` |
 * | application/vnd.oci.image.index.v1+json | index | `manifests[]` (manifests), optional `subject` |
 * | application/vnd.docker.distribution.manifest.v2+json | image | `config`, `layers[]` |
 * | application/vnd.docker.distribution.manifest.list.v2+json | index | `manifests[]` |
 *
 * Our limits (the attacks they stop): a manifest is at most 4 MiB (distribution's own default; a
 * larger body is refused before it is parsed), its JSON nests at most 32 levels (a `[[[[…` body
 * parsed into a deep structure), it lists at most 1,000 descriptors, and an index is at most 8
 * levels above an image manifest (each level must already be stored, so depth is known on PUT).
 */
import { DomainError } from '../errors.js';
import { isDigest, type Digest } from '../../store/blob-store.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

export const MANIFEST_MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST] as const;
export type ManifestMediaType = (typeof MANIFEST_MEDIA_TYPES)[number];

export const MANIFEST_LIMITS = {
  maxBytes: 4 * 1024 * 1024,
  maxJsonDepth: 32,
  maxDescriptors: 1000,
  maxIndexDepth: 8,
} as const;

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ParsedManifest {
  mediaType: ManifestMediaType;
  kind: 'image' | 'index';
  /** image manifests */
  config?: Descriptor;
  /** image manifests */
  layers: Descriptor[];
  /** indexes */
  manifests: Descriptor[];
  subject?: Descriptor;
  /** `artifactType`, or for an image manifest without one, its config's media type (referrers API rule) */
  artifactType?: string;
  annotations?: Record<string, string>;
}

const invalidManifest = (message: string, details: Record<string, unknown> = {}) => new DomainError('MANIFEST_INVALID', message, details);

/** The media type of a Content-Type header value (parameters dropped), lower-cased. */
export function mediaTypeOf(contentType: string | undefined): string | undefined {
  const t = contentType?.split(';')[0]?.trim().toLowerCase();
  return t === '' ? undefined : t;
}

/**
 * Parses and checks a manifest body. `contentType` is the request's; when it and the body's
 * `mediaType` both name one, they must agree.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined): ParsedManifest {
  if (bytes.length > MANIFEST_LIMITS.maxBytes) {
    throw new DomainError('SIZE_LIMIT', `the manifest is ${bytes.length} bytes, over the ${MANIFEST_LIMITS.maxBytes}-byte limit for one manifest`, {
      size: bytes.length,
      limit: MANIFEST_LIMITS.maxBytes,
    });
  }
  const depth = jsonDepth(bytes);
  if (depth > MANIFEST_LIMITS.maxJsonDepth)
    throw invalidManifest(
      `the manifest's JSON nests ${depth > 10_000 ? 'over 10000' : depth} levels deep; at most ${MANIFEST_LIMITS.maxJsonDepth} are accepted`,
    );
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8'));
  } catch (e) {
    throw invalidManifest(`the manifest is not valid JSON (${(e as Error).message.slice(0, 200)})`);
  }
  if (!isObject(doc)) throw invalidManifest('the manifest must be a JSON object');
  if (doc.schemaVersion !== 2) throw invalidManifest(`schemaVersion must be 2, not ${JSON.stringify(doc.schemaVersion)?.slice(0, 40) ?? 'absent'}`);
  const declared = doc.mediaType === undefined ? undefined : stringField(doc, 'mediaType', 255);
  const header = mediaTypeOf(contentType);
  const headerNamesManifest = header !== undefined && (MANIFEST_MEDIA_TYPES as readonly string[]).includes(header);
  if (declared !== undefined && headerNamesManifest && declared !== header)
    throw invalidManifest(`the Content-Type (${header}) and the manifest's mediaType (${declared}) differ; send the manifest with Content-Type: ${declared}`);
  const mediaType = declared ?? (headerNamesManifest ? header : undefined) ?? (Array.isArray(doc.manifests) ? OCI_INDEX : OCI_MANIFEST);
  if (!(MANIFEST_MEDIA_TYPES as readonly string[]).includes(mediaType)) {
    throw invalidManifest(`manifest media type "${mediaType.slice(0, 100)}" is not supported; use one of ${MANIFEST_MEDIA_TYPES.join(', ')}`, {
      mediaType: mediaType.slice(0, 255),
    });
  }
  const mt = mediaType as ManifestMediaType;
  const kind = mt === OCI_INDEX || mt === DOCKER_LIST ? 'index' : 'image';
  const out: ParsedManifest = { mediaType: mt, kind, layers: [], manifests: [] };
  const oci = mt === OCI_MANIFEST || mt === OCI_INDEX;
  if (doc.annotations !== undefined) out.annotations = annotations(doc.annotations, 'annotations');
  if (oci && doc.artifactType !== undefined) out.artifactType = stringField(doc, 'artifactType', 255);
  if (oci && doc.subject !== undefined) out.subject = descriptor(doc.subject, 'subject');
  if (kind === 'image') {
    if (doc.config === undefined) throw invalidManifest('an image manifest needs a "config" descriptor');
    out.config = descriptor(doc.config, 'config');
    out.layers = descriptors(doc.layers ?? [], 'layers');
    if (out.artifactType === undefined && oci && out.config.mediaType !== OCI_EMPTY) out.artifactType = out.config.mediaType;
  } else {
    if (doc.manifests === undefined) throw invalidManifest('an index needs a "manifests" array');
    out.manifests = descriptors(doc.manifests, 'manifests');
  }
  return out;
}

/** The blobs an image manifest references (config, then layers); none for an index. */
export function referencedBlobs(m: ParsedManifest): Descriptor[] {
  return m.config ? [m.config, ...m.layers] : [];
}

/**
 * How deeply `bytes` nests JSON arrays and objects (brackets inside strings do not count). Stops
 * counting at 10,001.
 */
export function jsonDepth(bytes: Uint8Array): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c)
        i++; // backslash: skip the escaped character
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) max = depth;
      if (max > 10_000) return max;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return max;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringField(o: Record<string, unknown>, key: string, max: number, where = ''): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '' || v.length > max) throw invalidManifest(`${where}${key} must be a non-empty string of at most ${max} characters`);
  return v;
}

function descriptors(v: unknown, where: string): Descriptor[] {
  if (!Array.isArray(v)) throw invalidManifest(`"${where}" must be an array of descriptors`);
  if (v.length > MANIFEST_LIMITS.maxDescriptors)
    throw invalidManifest(`"${where}" lists ${v.length} descriptors; at most ${MANIFEST_LIMITS.maxDescriptors} are accepted`);
  return v.map((d, i) => descriptor(d, `${where}[${i}]`));
}

function descriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalidManifest(`${where} must be a descriptor object ({mediaType, digest, size})`);
  const mediaType = stringField(v, 'mediaType', 255, `${where}.`);
  if (typeof v.digest !== 'string' || !isDigest(v.digest))
    throw invalidManifest(`${where}.digest must be sha256:<64 lower-case hex digits>, not ${JSON.stringify(v.digest)?.slice(0, 100) ?? 'absent'}`);
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) throw invalidManifest(`${where}.size must be a whole number of bytes`);
  const d: Descriptor = { mediaType, digest: v.digest, size: v.size };
  if (v.artifactType !== undefined) d.artifactType = stringField(v, 'artifactType', 255, `${where}.`);
  if (v.annotations !== undefined) d.annotations = annotations(v.annotations, `${where}.annotations`);
  return d;
}

function annotations(v: unknown, where: string): Record<string, string> {
  if (!isObject(v)) throw invalidManifest(`${where} must be an object of string values`);
  for (const [k, val] of Object.entries(v)) if (typeof val !== 'string') throw invalidManifest(`${where}["${k.slice(0, 100)}"] must be a string`);
  return v as Record<string, string>;
}
