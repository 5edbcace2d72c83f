/**
 * The one image lifecycle. States and events are `as const` unions; every legal move is in
 * `transition`, an illegal one is an error naming the state and the event. Glance, OpenNebula and
 * Deckhouse vocabularies are views derived here, never stored.
 *
 *   pending ──start──► importing ──succeed──► ready ⇄ disabled
 *      │                  │  ▲  │              │ ▲
 *      │                  │  │  └─stage─► staged ──succeed──► ready   (Glance: stage, then import)
 *      │                  │  └─progress        lock/unlock ─► locked
 *      │                  └──fail──► error ──start──► importing (upload again)
 *   any (not locked) ──delete──► deleting ──(record removed)
 *
 * `staged`: the bytes went through the one ingest path (inspected, hashed, accepted, committed to
 * the store) and wait for the import that makes them the image's (Glance's `uploading` after
 * `PUT …/stage`, until `POST …/import` with glance-direct).
 */
export const IMAGE_STATES = ['pending', 'importing', 'staged', 'ready', 'disabled', 'error', 'deleting', 'locked'] as const;
export type ImageState = (typeof IMAGE_STATES)[number];

export const IMAGE_EVENTS = ['start', 'progress', 'stage', 'succeed', 'fail', 'disable', 'enable', 'lock', 'unlock', 'delete'] as const;
export type ImageEvent = (typeof IMAGE_EVENTS)[number];

export class IllegalTransition extends Error {
  constructor(
    readonly state: ImageState,
    readonly event: ImageEvent,
  ) {
    super(`an image that is ${state} cannot ${event}`);
    this.name = 'IllegalTransition';
  }
}

/** The next state, or IllegalTransition. Exhaustive over states: the compiler checks every case. */
export function transition(state: ImageState, event: ImageEvent): ImageState {
  const next = nextState(state, event);
  if (next === undefined) throw new IllegalTransition(state, event);
  return next;
}

export function canTransition(state: ImageState, event: ImageEvent): boolean {
  return nextState(state, event) !== undefined;
}

function nextState(state: ImageState, event: ImageEvent): ImageState | undefined {
  switch (state) {
    case 'pending':
      return event === 'start' ? 'importing' : event === 'fail' ? 'error' : event === 'delete' ? 'deleting' : undefined;
    case 'importing':
      switch (event) {
        case 'progress':
          return 'importing';
        case 'stage':
          return 'staged';
        case 'succeed':
          return 'ready';
        case 'fail':
          return 'error';
        case 'delete':
          return 'deleting';
        default:
          return undefined;
      }
    case 'staged':
      return event === 'succeed' ? 'ready' : event === 'fail' ? 'error' : event === 'delete' ? 'deleting' : undefined;
    case 'ready':
      switch (event) {
        case 'disable':
          return 'disabled';
        case 'lock':
          return 'locked';
        case 'fail':
          return 'error';
        case 'delete':
          return 'deleting';
        default:
          return undefined;
      }
    case 'disabled':
      return event === 'enable' ? 'ready' : event === 'delete' ? 'deleting' : event === 'fail' ? 'error' : undefined;
    case 'error':
      return event === 'start' ? 'importing' : event === 'delete' ? 'deleting' : event === 'fail' ? 'error' : undefined;
    case 'deleting':
      return event === 'delete' ? 'deleting' : undefined;
    case 'locked':
      return event === 'unlock' ? 'ready' : event === 'fail' ? 'error' : undefined;
    default: {
      const never: never = state;
      return never;
    }
  }
}

// ---- views ----------------------------------------------------------------------------------

export type GlanceStatus = 'queued' | 'saving' | 'uploading' | 'importing' | 'active' | 'deactivated' | 'killed' | 'deleted';
export type OpenNebulaState = 'LOCKED' | 'READY' | 'USED' | 'USED_PERS' | 'DISABLED' | 'ERROR' | 'DELETE' | 'CLONE';
export type DeckhousePhase = 'Pending' | 'WaitForUserUpload' | 'Provisioning' | 'Ready' | 'Failed' | 'Terminating' | 'ImageLost';

export interface LifecycleFacts {
  state: ImageState;
  /** how bytes are arriving while importing: an upload (Glance "saving"), a URL import ("importing") or a stage ("uploading") */
  ingestKind?: 'upload' | 'import' | 'stage';
  /** disks using the image (OpenNebula RUNNING_VMS) */
  usedBy?: number;
  persistent?: boolean;
  /** why the image is locked (OpenNebula shows CLONE for a clone source) */
  lockReason?: 'clone' | 'snapshot' | 'convert';
  /** a ready image whose blob is missing from storage */
  blobMissing?: boolean;
}

export function glanceStatus(f: LifecycleFacts): GlanceStatus {
  switch (f.state) {
    case 'pending':
      return 'queued';
    case 'importing':
      return f.ingestKind === 'import' ? 'importing' : f.ingestKind === 'stage' ? 'uploading' : 'saving';
    case 'staged':
      return 'uploading';
    case 'ready':
    case 'locked':
      return 'active';
    case 'disabled':
      return 'deactivated';
    case 'error':
      return 'killed';
    case 'deleting':
      return 'deleted';
  }
}

export function openNebulaState(f: LifecycleFacts): OpenNebulaState {
  switch (f.state) {
    case 'pending':
    case 'importing':
    case 'staged':
      return 'LOCKED';
    case 'ready':
      if ((f.usedBy ?? 0) > 0) return f.persistent ? 'USED_PERS' : 'USED';
      return 'READY';
    case 'locked':
      return f.lockReason === 'clone' ? 'CLONE' : 'LOCKED';
    case 'disabled':
      return 'DISABLED';
    case 'error':
      return 'ERROR';
    case 'deleting':
      return 'DELETE';
  }
}

export function deckhousePhase(f: LifecycleFacts): DeckhousePhase {
  switch (f.state) {
    case 'pending':
      return f.ingestKind === 'import' ? 'Pending' : 'WaitForUserUpload';
    case 'importing':
    case 'staged':
      return 'Provisioning';
    case 'ready':
    case 'disabled':
    case 'locked':
      return f.blobMissing ? 'ImageLost' : 'Ready';
    case 'error':
      return 'Failed';
    case 'deleting':
      return 'Terminating';
  }
}
