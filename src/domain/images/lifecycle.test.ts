import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  IMAGE_EVENTS,
  IMAGE_STATES,
  IllegalTransition,
  canTransition,
  deckhousePhase,
  glanceStatus,
  openNebulaState,
  transition,
  type ImageEvent,
  type ImageState,
} from './lifecycle.js';

// The whole table, written out: every (state, event) cell is asserted, legal or not.
const LEGAL: Record<ImageState, Partial<Record<ImageEvent, ImageState>>> = {
  pending: { start: 'importing', fail: 'error', delete: 'deleting' },
  importing: { progress: 'importing', stage: 'staged', succeed: 'ready', fail: 'error', delete: 'deleting' },
  staged: { succeed: 'ready', fail: 'error', delete: 'deleting' },
  ready: { disable: 'disabled', lock: 'locked', fail: 'error', delete: 'deleting' },
  disabled: { enable: 'ready', delete: 'deleting', fail: 'error' },
  error: { start: 'importing', delete: 'deleting', fail: 'error' },
  deleting: { delete: 'deleting' },
  locked: { unlock: 'ready', fail: 'error' },
};

for (const state of IMAGE_STATES) {
  for (const event of IMAGE_EVENTS) {
    const expected = LEGAL[state][event];
    test(`${state} --${event}--> ${expected ?? 'illegal'}`, () => {
      assert.equal(canTransition(state, event), expected !== undefined);
      if (expected) assert.equal(transition(state, event), expected);
      else
        assert.throws(
          () => transition(state, event),
          (e: unknown) => e instanceof IllegalTransition && e.message === `an image that is ${state} cannot ${event}`,
        );
    });
  }
}

test('views: Glance status, OpenNebula state and Deckhouse phase derive from the state', () => {
  const rows: [Parameters<typeof glanceStatus>[0], string, string, string][] = [
    [{ state: 'pending' }, 'queued', 'LOCKED', 'WaitForUserUpload'],
    [{ state: 'pending', ingestKind: 'import' }, 'queued', 'LOCKED', 'Pending'],
    [{ state: 'importing', ingestKind: 'upload' }, 'saving', 'LOCKED', 'Provisioning'],
    [{ state: 'importing', ingestKind: 'import' }, 'importing', 'LOCKED', 'Provisioning'],
    [{ state: 'importing', ingestKind: 'stage' }, 'uploading', 'LOCKED', 'Provisioning'],
    [{ state: 'staged', ingestKind: 'stage' }, 'uploading', 'LOCKED', 'Provisioning'],
    [{ state: 'ready' }, 'active', 'READY', 'Ready'],
    [{ state: 'ready', usedBy: 2 }, 'active', 'USED', 'Ready'],
    [{ state: 'ready', usedBy: 1, persistent: true }, 'active', 'USED_PERS', 'Ready'],
    [{ state: 'ready', blobMissing: true }, 'active', 'READY', 'ImageLost'],
    [{ state: 'disabled' }, 'deactivated', 'DISABLED', 'Ready'],
    [{ state: 'error' }, 'killed', 'ERROR', 'Failed'],
    [{ state: 'deleting' }, 'deleted', 'DELETE', 'Terminating'],
    [{ state: 'locked', lockReason: 'clone' }, 'active', 'CLONE', 'Ready'],
    [{ state: 'locked', lockReason: 'convert' }, 'active', 'LOCKED', 'Ready'],
  ];
  for (const [facts, g, o, d] of rows) {
    assert.equal(glanceStatus(facts), g, JSON.stringify(facts));
    assert.equal(openNebulaState(facts), o, JSON.stringify(facts));
    assert.equal(deckhousePhase(facts), d, JSON.stringify(facts));
  }
});
