/**
 * The REST representation of an image: the stored record plus the derived lifecycle views. One
 * type (`ImageJson`) for the server that writes it and the clients that read it (the CLI).
 */
import { Type } from 'typebox';
import { formatMode, modeTriplets } from '../../domain/access/policy.js';
import type { Image } from '../../domain/images/image.js';
import { IMAGE_STATES, deckhousePhase, glanceStatus, openNebulaState } from '../../domain/images/lifecycle.js';

/** An image as `GET /api/v1/images/{id}` returns it. */
export interface ImageJson {
  id: string;
  /** absent for an image made nameless through the Glance door */
  name?: string;
  description?: string;
  type: Image['type'];
  diskFormat?: Image['diskFormat'];
  containerFormat?: Image['containerFormat'];
  architecture?: string;
  osDistro?: string;
  osVersion?: string;
  osType?: string;
  /** GiB */
  minDisk: number;
  /** MiB */
  minRam: number;
  persistent: boolean;
  /** delete is refused until cleared (Glance `protected`) */
  protected: boolean;
  /** left out of Glance's default image list (Glance `os_hidden`) */
  hidden: boolean;
  properties: Record<string, string>;
  tags: string[];
  /** owning project; null = cluster scope */
  project: string | null;
  scope: 'project' | 'cluster';
  owner?: string;
  visibility: Image['visibility'];
  /** octal owner/group/other × use(4)/manage(2)/admin(1), e.g. 660 */
  permissions: string;
  /** the same as um-um---- */
  permissionsText: string;
  state: Image['state'];
  stateReason?: string;
  progress?: number;
  /** sha256:<hex> of the stored (unwrapped) bytes */
  digest?: string;
  storedSize?: number;
  virtualSize?: number;
  checksums: Image['checksums'];
  inspection?: Image['inspection'];
  usedBy: number;
  glanceStatus: ReturnType<typeof glanceStatus>;
  openNebulaState: ReturnType<typeof openNebulaState>;
  deckhousePhase: ReturnType<typeof deckhousePhase>;
  /** ISO 8601 */
  createdAt: string;
  /** ISO 8601 */
  updatedAt: string;
  version: number;
}

export function imageJson(img: Image): ImageJson {
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
    protected: img.protected === true,
    hidden: img.hidden === true,
    properties: img.properties,
    tags: img.tags,
    project: img.project ?? null,
    scope: img.project === undefined ? 'cluster' : 'project',
    owner: img.owner,
    visibility: img.visibility,
    permissions: formatMode(img.perms),
    permissionsText: modeTriplets(img.perms),
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

const IMAGE_SCHEMA = {
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
    protected: { type: 'boolean', description: 'delete is refused until cleared (Glance protected)' },
    hidden: { type: 'boolean', description: "left out of Glance's default image list (os_hidden)" },
    properties: { type: 'object', additionalProperties: { type: 'string' } },
    tags: { type: 'array', items: str },
    project: { type: ['string', 'null'], description: 'owning project; null = cluster scope (server admins only, unless public)' },
    scope: { type: 'string', enum: ['project', 'cluster'] },
    owner: { type: 'string', description: 'the user who created it' },
    visibility: { type: 'string', enum: ['private', 'project', 'shared', 'public', 'community'] },
    permissions: { type: 'string', description: 'OpenNebula-style octal owner/group/other × use(4)/manage(2)/admin(1), e.g. 660' },
    permissionsText: { type: 'string', description: 'the same as um-um---- (use, manage, admin)' },
    state: { type: 'string', enum: [...IMAGE_STATES] },
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

/** The response schema of an image (it also decides which fields are serialized). */
/** The upload URL of an image created with `"upload": true` (Deckhouse's `status.imageUploadURLs`). */
export interface UploadUrlJson {
  /** PUT the bytes here (curl -T); no other credentials */
  url: string;
  /** the tus endpoint, with Authorization: Bearer <token> */
  tusEndpoint: string;
  token: string;
  expiresAt: string;
}

export const UPLOAD_URL_SCHEMA = {
  type: 'object',
  properties: {
    url: { type: 'string', description: 'PUT the image bytes here (curl -T file URL); no other credentials needed' },
    tusEndpoint: { type: 'string', description: 'the tus endpoint; send Authorization: Bearer <token>' },
    token: { type: 'string', description: 'the upload token: this image only, upload only, until expiresAt' },
    expiresAt: { type: 'string', format: 'date-time' },
  },
  required: ['url', 'tusEndpoint', 'token', 'expiresAt'],
} as const;

/** An image as created with `"upload": true`: the image and its upload URL. */
export const createdImageSchema = (description: string) =>
  Type.Unsafe<ImageJson & { uploadUrl?: UploadUrlJson }>({
    ...IMAGE_SCHEMA,
    properties: { ...IMAGE_SCHEMA.properties, uploadUrl: { ...UPLOAD_URL_SCHEMA, description: 'with "upload": true in the request' } },
    description,
  });

export const imageSchema = (description?: string) => Type.Unsafe<ImageJson>({ ...IMAGE_SCHEMA, ...(description ? { description } : {}) });
