/**
 * The project's stored-bytes quota as the OCI door draws on it: the same limit and the same usage
 * figure as the REST API (images' bytes, each counted in full, plus the project's repositories'
 * distinct blobs and manifests that no image of the project holds, plus open uploads), so a project
 * cannot exceed its quota by pushing over OCI, and a pushed layer that became an image counts once.
 *
 * `room` is an early, unlocked reading (a push over it is refused before its bytes are read);
 * `check` is the verdict on a write made under the project's lock (RegistryRepository.underQuota),
 * the one that decides: of two pushes racing for the last free bytes, one is refused.
 */
import type { AccessRepository } from '../access/access-repository.js';
import type { DomainError } from '../errors.js';
import type { ImageRepository } from '../images/image.js';
import type { QuotaChange } from './registry-repository.js';
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

  /** The early refusal: QUOTA_EXCEEDED when `adding` more bytes do not fit now (unlocked; `check` decides). */
  async early(project: string, adding: number): Promise<void> {
    const q = await this.room(project);
    if (q !== undefined && adding > q.room) throw exceeded(project, q, adding);
  }

  /**
   * The verdict on a write under the project's lock: QUOTA_EXCEEDED when it made the usage grow
   * past the limit (a write that adds nothing passes, even in a project already over a lowered limit).
   */
  check(project: string): (q: QuotaChange) => void {
    return ({ limit, before, after }) => {
      if (limit === undefined || after <= limit || after <= before) return;
      throw exceeded(project, { limit, used: before, room: Math.max(0, limit - before) }, after - before);
    };
  }
}

/** The refusal for `adding` bytes (undefined: a stream that grew past the room). */
export function exceeded(project: string, q: QuotaRoom, adding: number | undefined): DomainError {
  return quotaExceeded(project, 'storedBytes', q.limit, q.used, adding, FIX);
}
