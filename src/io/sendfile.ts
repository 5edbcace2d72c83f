/**
 * sendfile(2) for Node through the native addon's engine (`native/sendfile-engine.c`): a range of
 * an open file goes to a socket inside the kernel, on the engine's own thread, so a download costs
 * the event loop two calls (start, done) whatever its size. Optional like the SEEK_DATA addon:
 * when it did not build, `sendfileEngine()` is undefined and callers stream the bytes instead.
 */
import { loadNativeAddon } from './native-addon.js';
import { Socket } from 'node:net';
import { constants } from 'node:os';

interface SendfileAddon {
  /** starts the engine thread; returns the read end of its wake pipe */
  init(): number;
  start(socketFd: number, fileFd: number, offset: number, length: number, idleMs: number): number;
  cancel(id: number): void;
  /** the transfers ended since the last drain: [id, errno, bytesSent, id, ...] */
  drain(): number[];
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
  // A byte in the wake pipe means: transfers ended (the engine writes one when its done list stops
  // being empty; see native/sendfile-engine.c). The stream keeps the process alive only while transfers run.
  const wakes = new Socket({ fd: addon.init(), readable: true, writable: false });
  wakes.unref();
  wakes.on('data', () => {
    const ended = addon.drain();
    for (let i = 0; i < ended.length; i += 3) {
      const id = ended[i]!;
      const errno = ended[i + 1]!;
      const sent = ended[i + 2]!;
      const p = pending.get(id);
      pending.delete(id);
      if (errno === 0) p?.resolve(sent);
      else p?.reject(new SendfileError(ERRNO_NAMES.get(errno) ?? `errno ${errno}`, sent));
    }
    if (pending.size === 0) wakes.unref();
  });
  return {
    send(socketFd, fileFd, offset, length, idleMs) {
      const id = addon.start(socketFd, fileFd, offset, length, idleMs);
      const done = new Promise<number>((resolve, reject) => pending.set(id, { resolve, reject }));
      if (pending.size === 1) wakes.ref();
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
