/**
 * sendfile(2) for Node through the native addon's engine (`native/sendfile-engine.c`): a range of
 * an open file goes to a socket inside the kernel, on the engine's own thread, so a download costs
 * the event loop two calls (start, done) whatever its size. Optional like the SEEK_DATA addon:
 * when it did not build, `sendfileEngine()` is undefined and callers stream the bytes instead.
 */
import { loadNativeAddon } from './native-addon.js';
import { constants } from 'node:os';

interface SendfileAddon {
  init(onDone: (id: number, errno: number, bytesSent: number) => void): void;
  start(socketFd: number, fileFd: number, offset: number, length: number, idleMs: number): number;
  cancel(id: number): void;
}

/** One transfer: `done` resolves with the bytes sent once all are, and rejects with a SendfileError otherwise. */
export interface SendfileTransfer {
  done: Promise<number>;
  /** ends the transfer now (its `done` rejects with ECANCELED); a no-op once it ended */
  cancel(): void;
}

export interface SendfileEngine {
  /**
   * Sends `length` bytes of the open file `fileFd` from `offset` to the connected, non-blocking
   * socket `socketFd`; nothing else may write to that socket meanwhile. The engine works on its own
   * dup of the socket; `fileFd` must stay open until `done` settles. A transfer with no progress
   * for `idleMs` (0: never) ends with ETIMEDOUT.
   */
  send(socketFd: number, fileFd: number, offset: number, length: number, idleMs: number): SendfileTransfer;
}

export class SendfileError extends Error {
  constructor(
    /** errno name: ENODATA (the file ended early), ETIMEDOUT (idle), ECANCELED, EPIPE, ECONNRESET, ... */
    readonly code: string,
    readonly bytesSent: number,
  ) {
    super(`sendfile ended with ${code} after ${bytesSent} bytes`);
    this.name = 'SendfileError';
  }
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/**
 * The engine of the addon `name` (see loadNativeAddon), or undefined when it cannot be loaded. One per process: use
 * `sendfileEngine()`; tests load one from elsewhere to see the fallback.
 */
export function loadSendfileEngine(name = 'sendfile_engine'): SendfileEngine | undefined {
  const addon = loadNativeAddon<SendfileAddon>(name);
  if (!addon) return undefined;
  const pending = new Map<number, { resolve: (sent: number) => void; reject: (e: SendfileError) => void }>();
  addon.init((id, errno, sent) => {
    const p = pending.get(id);
    pending.delete(id);
    if (errno === 0) p?.resolve(sent);
    else p?.reject(new SendfileError(ERRNO_NAMES.get(errno) ?? `errno ${errno}`, sent));
  });
  return {
    send(socketFd, fileFd, offset, length, idleMs) {
      const id = addon.start(socketFd, fileFd, offset, length, idleMs);
      const done = new Promise<number>((resolve, reject) => pending.set(id, { resolve, reject }));
      return { done, cancel: () => addon.cancel(id) };
    },
  };
}

let loaded: { engine: SendfileEngine | undefined } | undefined;

/** The process's engine, loaded (and its thread started) on first use; undefined when the addon did not build. */
export function sendfileEngine(): SendfileEngine | undefined {
  loaded ??= { engine: loadSendfileEngine() };
  return loaded.engine;
}
