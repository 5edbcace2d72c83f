/** The REST representation of an image: the stored record plus the derived lifecycle views. */
import type { Image } from '../domain/image.js';
import { deckhousePhase, glanceStatus, openNebulaState } from '../domain/lifecycle.js';

export function imageJson(img: Image): Record<string, unknown> {
  const facts = {
    state: img.state,
    ingestKind: img.ingestKind,
    usedBy: img.usedBy,
    persistent: img.persistent,
    lockReason: img.lockReason,
  };
  return {
    id: img.id,
    name: img.name,
    description: img.description,
    type: img.type,
    diskFormat: img.diskFormat,
    containerFormat: img.containerFormat,
    architecture: img.architecture,
    osDistro: img.osDistro,
    osVersion: img.osVersion,
    osType: img.osType,
    minDisk: img.minDisk,
    minRam: img.minRam,
    persistent: img.persistent,
    properties: img.properties,
    tags: img.tags,
    state: img.state,
    stateReason: img.stateReason,
    progress: img.progress,
    digest: img.digest,
    storedSize: img.storedSize,
    virtualSize: img.virtualSize,
    checksums: img.checksums,
    inspection: img.inspection,
    usedBy: img.usedBy,
    glanceStatus: glanceStatus(facts),
    openNebulaState: openNebulaState(facts),
    deckhousePhase: deckhousePhase(facts),
    createdAt: img.createdAt.toISOString(),
    updatedAt: img.updatedAt.toISOString(),
    version: img.version,
  };
}

const str = { type: 'string' } as const;
const int = { type: 'integer' } as const;

export const IMAGE_SCHEMA = {
  type: 'object',
  properties: {
    id: str,
    name: str,
    description: str,
    type: { type: 'string', enum: ['OS', 'CDROM', 'DATABLOCK', 'KERNEL', 'RAMDISK', 'CONTEXT'] },
    diskFormat: str,
    containerFormat: str,
    architecture: str,
    osDistro: str,
    osVersion: str,
    osType: str,
    minDisk: int,
    minRam: int,
    persistent: { type: 'boolean' },
    properties: { type: 'object', additionalProperties: { type: 'string' } },
    tags: { type: 'array', items: str },
    state: { type: 'string', enum: ['pending', 'importing', 'ready', 'disabled', 'error', 'deleting', 'locked'] },
    stateReason: str,
    progress: int,
    digest: { type: 'string', description: 'sha256:<hex> of the stored (unwrapped) bytes; the content address' },
    storedSize: { type: 'integer', description: 'bytes stored' },
    virtualSize: { type: 'integer', description: 'guest-visible size (Deckhouse UNPACKEDSIZE)' },
    checksums: { type: 'object', properties: { md5: str, sha512: str } },
    inspection: { type: 'object', additionalProperties: true },
    usedBy: int,
    glanceStatus: str,
    openNebulaState: str,
    deckhousePhase: str,
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    version: int,
  },
} as const;
