/**
 * The project's stored-bytes quota as the OCI door draws on it: the same limit and the same usage
 * figure as the REST API (images' bytes plus the project's repositories' blobs, manifests and open
 * uploads, each counted in full), so a project cannot exceed its quota by pushing over OCI.
 */
import type { AccessRepository } from '../access/access-repository.js';
import type { DomainError } from '../errors.js';
import type { ImageRepository } from '../images/image.js';
import { quotaExceeded } from '../images/quota-exceeded.js';

export interface QuotaRoom {
  limit: number;
  used: number;
  /** bytes that still fit */
  room: number;
}

const FIX = 'delete tags, manifests or images you no longer need, or ask an administrator to raise the limit';

export class RegistryQuota {
  constructor(
    private readonly access: AccessRepository,
    private readonly images: ImageRepository,
  ) {}

  /** What the project may still store; undefined when it has no stored-bytes limit. */
  async room(project: string): Promise<QuotaRoom | undefined> {
    const limit = (await this.access.project(project))?.quota.storedBytes;
    if (limit === undefined) return undefined;
    const u = await this.images.usage(project);
    const used = u.storedBytes + u.stagingBytes;
    return { limit, used, room: Math.max(0, limit - used) };
  }

  /** Throws QUOTA_EXCEEDED when `adding` more bytes do not fit. */
  async check(project: string, adding: number): Promise<void> {
    const q = await this.room(project);
    if (q !== undefined && adding > q.room) throw exceeded(project, q, adding);
  }
}

/** The refusal for `adding` bytes (undefined: a stream that grew past the room). */
export function exceeded(project: string, q: QuotaRoom, adding: number | undefined): DomainError {
  return quotaExceeded(project, 'storedBytes', q.limit, q.used, adding, FIX);
}
