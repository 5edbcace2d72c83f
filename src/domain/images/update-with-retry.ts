/**
 * Optimistic concurrency for the catalog: a change is computed from the image as read and written
 * only if the image's version is still the one read (`repo.update(..., { expectedVersion })`
 * answers `undefined` otherwise). A lost race reads again and recomputes — never blindly
 * overwrites another writer's change. Every read-decide-write loop of the domain is this one.
 */

/** What an attempt answers when its conditional write lost the race: read again and retry. */
export const LOST_RACE: unique symbol = Symbol('lost race');

/**
 * Runs `attempt` until it answers something other than `LOST_RACE`, at most `attempts` times;
 * then answers `exhausted()` (which usually throws a CONFLICT telling the caller to try again).
 */
export async function updateWithRetry<T>(attempts: number, attempt: () => Promise<T | typeof LOST_RACE>, exhausted: () => T): Promise<T> {
  for (let i = 0; i < attempts; i++) {
    const result = await attempt();
    if (result !== LOST_RACE) return result;
  }
  return exhausted();
}
