/**
 * The image catalog: the records behind every door — create, read, list, update, enable/disable
 * and delete — with the lifecycle's moves and the project's image-count quota. Framework-free; the
 * HTTP edges (REST now, Glance and OCI later) call these methods and map DomainError codes to their
 * wire shapes. Bytes come in through the IngestCoordinator and go out through the VariantService.
 */
import { createHash, randomUUID } from 'node:crypto';
import { DEFAULT_PERMS } from '../access/policy.js';
import { DomainError, conflict, notFound } from '../errors.js';
import type { ImageEvents } from './events.js';
import type { Image, ImagePage, ImagePatch, ImageQuery, ImageRepository } from './image.js';
import type { CreateImageInput } from './image-input.js';
import { canTransition, transition, type ImageEvent, type ImageState } from './lifecycle.js';
import { quotaExceeded } from './quota-exceeded.js';
import { LOST_RACE, updateWithRetry } from './update-with-retry.js';

/** What runs once an image is marked `deleting`, before its record is removed (cancels its running ingest). */
export type DeletingHook = (id: string) => void;

export class ImageCatalog {
  private deletingHook: DeletingHook | undefined;

  constructor(
    readonly repo: ImageRepository,
    readonly events: ImageEvents,
  ) {}

  /** Sets what runs when an image is being deleted (the composition root wires: cancel its ingest). */
  whenDeleting(hook: DeletingHook): void {
    this.deletingHook = hook;
  }

  async create(
    input: CreateImageInput,
    idempotencyKey?: string,
    ownership: Partial<Pick<Image, 'project' | 'owner' | 'visibility' | 'perms'>> = {},
  ): Promise<{ image: Image; replayed: boolean }> {
    const now = new Date();
    const image: Image = {
      id: randomUUID(),
      name: input.name,
      description: input.description,
      type: input.type ?? 'OS',
      diskFormat: input.diskFormat,
      containerFormat: input.containerFormat,
      architecture: input.architecture,
      osDistro: input.osDistro,
      osVersion: input.osVersion,
      osType: input.osType,
      minDisk: input.minDisk ?? 0,
      minRam: input.minRam ?? 0,
      persistent: input.persistent ?? false,
      properties: input.properties ?? {},
      tags: input.tags ?? [],
      state: 'pending',
      usedBy: 0,
      checksums: {},
      createdAt: now,
      updatedAt: now,
      version: 1,
      visibility: ownership.visibility ?? 'project',
      perms: ownership.perms ?? DEFAULT_PERMS,
      reservedBytes: 0,
    };
    if (ownership.project !== undefined) image.project = ownership.project;
    if (ownership.owner !== undefined) image.owner = ownership.owner;
    const idem = idempotencyKey === undefined ? undefined : { key: idempotencyKey, requestHash: requestHash({ ...input, project: ownership.project }) };
    const project = image.project;
    const result =
      project === undefined
        ? await this.repo.create(image, idem)
        : await this.repo.underProjectLock(project, (tx) =>
            tx.create(image, idem, async () => {
              if (tx.limits.images === undefined) return;
              const used = await tx.usage();
              if (used.images + 1 > tx.limits.images) {
                throw quotaExceeded(
                  project,
                  'images',
                  tx.limits.images,
                  used.images,
                  1,
                  'delete images the project no longer needs, or ask an administrator to raise the limit',
                );
              }
            }),
          );
    if (!result.replayed) this.events.publish('created', result.image);
    return result;
  }

  async get(id: string): Promise<Image> {
    const img = await this.repo.get(id);
    if (!img || img.state === 'deleting') throw notFound(id);
    return img;
  }

  list(query: ImageQuery): Promise<ImagePage> {
    return this.repo.list(query);
  }

  async update(id: string, patch: ImagePatch): Promise<Image> {
    return updateWithRetry(
      5,
      async () => {
        const img = await this.get(id);
        const updated = await this.repo.update(id, patch, { expectedVersion: img.version, fromStates: liveStates });
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
        return updated;
      },
      () => {
        throw conflict(`image ${id} is changing too fast to update; try again`);
      },
    );
  }

  disable(id: string): Promise<Image> {
    return this.move(id, 'disable');
  }

  enable(id: string): Promise<Image> {
    return this.move(id, 'enable');
  }

  /** Removes the image record. Its blob stays until GC finds no image referencing it. */
  async delete(id: string): Promise<void> {
    const img = await this.get(id);
    if (img.state === 'locked') {
      throw new DomainError('IMAGE_LOCKED', `image ${id} is locked by a ${img.lockReason ?? 'running operation'}; wait for it to finish, then delete`, { id });
    }
    if (img.usedBy > 0) {
      throw new DomainError('IMAGE_IN_USE', `image ${id} is used by ${img.usedBy} disk(s); detach or delete them first`, { id, usedBy: img.usedBy });
    }
    await this.move(id, 'delete');
    this.deletingHook?.(id);
    await this.repo.remove(id);
    this.events.publish('deleted', { ...img, state: transition(img.state, 'delete') });
  }

  /** Start-up recovery: removes the records of deletions a stopped process left half done. Returns how many. */
  async finishDeletions(): Promise<number> {
    let deleted = 0;
    for (const img of await this.repo.inStates(['deleting'])) {
      if (await this.repo.remove(img.id)) deleted++;
    }
    return deleted;
  }

  private async move(id: string, event: ImageEvent): Promise<Image> {
    return updateWithRetry(
      5,
      async () => {
        const img = await this.get(id);
        if (!canTransition(img.state, event)) throw cannot(img, event);
        const updated = await this.repo.update(id, { state: transition(img.state, event) }, { expectedVersion: img.version });
        if (!updated) return LOST_RACE;
        if (event !== 'delete') this.events.publish('updated', updated);
        return updated;
      },
      () => {
        throw conflict(`image ${id} is changing too fast; try again`);
      },
    );
  }
}

function cannot(img: Image, event: ImageEvent): DomainError {
  return new DomainError('INVALID_STATE', `an image that is ${img.state} cannot ${event}`, { id: img.id, state: img.state, event });
}

const liveStates: readonly ImageState[] = ['pending', 'importing', 'staged', 'ready', 'disabled', 'error', 'locked'];

function requestHash(input: unknown): string {
  return createHash('sha256').update(canonicalJson(input)).digest('hex');
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
