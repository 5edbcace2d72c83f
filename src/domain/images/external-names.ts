/**
 * What a server-side refusal may quote. The format engine quotes the names an image points at —
 * a backing file, a data file, a VMDK extent, a parent disk — which is what the owner wants from
 * `imago inspect` on their own machine. Stored on the server (the image's `stateReason`, its
 * inspection, the UNSAFE_IMAGE answer) those names are paths from the uploader's machine
 * (`/tmp/…/ext.raw`), shown to everyone who may read the image: the server never saw those
 * files, so its reasons do not name them. Names of things inside the uploaded bytes (OVA members)
 * stay.
 */
import type { Finding } from '../../formats/findings.js';

/** Findings whose quoted names are files outside the image. */
const EXTERNAL_FILE_CODES = new Set(['BACKING_FILE', 'DATA_FILE', 'VMDK_EXTENT_OUTSIDE', 'DIFFERENCING_DISK']);

const QUOTED = /"(?:[^"\\]|\\.)*"/g;
/** our own advice, quoted in the same messages ("qemu-img convert -O qcow2 IN OUT") */
const ADVICE = /^"(?:qemu-img|imago) /;
const WITHHELD = '[a file outside the image; its name is not shown]';

/** A quoted string that reads as a path on some machine: absolute, a drive, or with a directory. */
function looksLikePath(quoted: string): boolean {
  let s: string;
  try {
    s = JSON.parse(quoted) as string;
  } catch {
    return false;
  }
  return /^[\\/]|^[A-Za-z]:|[\\/]/.test(s);
}

export function withoutExternalName(f: Finding): Finding {
  const all = EXTERNAL_FILE_CODES.has(f.code);
  const message = f.message.replace(QUOTED, (q) => (ADVICE.test(q) ? q : all || looksLikePath(q) ? WITHHELD : q));
  return message === f.message ? f : { ...f, message };
}

export function withoutExternalNames(findings: readonly Finding[]): Finding[] {
  return findings.map(withoutExternalName);
}

/** Detail fields that hold names of files outside the image (qcow2/QED, VMDK, VHD, VHDX). */
const EXTERNAL_KEYS = new Set(['backingFile', 'dataFile', 'parentName', 'parentFileNameHint']);
const NOT_SHOWN = '[not shown]';

/**
 * The inspection details with those names replaced by "[not shown]" (their presence stays: the
 * image has a backing file, an extent in another file): VMDK `extents[].file`, every entry of a
 * VHDX `parentLocator`, and the keys above.
 */
export function withoutExternalDetails<T>(details: T): T {
  const walk = (v: unknown, key: string, parentKey: string, inLocator: boolean): unknown => {
    if (typeof v === 'string') return inLocator || EXTERNAL_KEYS.has(key) || (key === 'file' && parentKey === 'extents') ? NOT_SHOWN : v;
    // array elements sit under the array's key
    if (Array.isArray(v)) return v.map((x) => walk(x, key, parentKey, inLocator));
    if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, k, key, inLocator || key === 'parentLocator');
      return out;
    }
    return v;
  };
  return walk(details, '', '', false) as T;
}
