/**
 * Image change events, for watchers (SSE `/api/v1/events`, `imago image get -w`). In-process:
 * one server's changes reach its own watchers. Listeners that throw are isolated.
 */
import { EventEmitter } from 'node:events';
import type { Image } from './image.js';

export interface ImageChange {
  /** monotonically increasing per process, for SSE ids */
  seq: number;
  type: 'created' | 'updated' | 'progress' | 'deleted';
  image: Image;
  at: Date;
}

export class ImageEvents {
  private readonly emitter = new EventEmitter();
  private seq = 0;

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(type: ImageChange['type'], image: Image): void {
    const change: ImageChange = { seq: ++this.seq, type, image, at: new Date() };
    for (const l of this.emitter.listeners('change') as ((c: ImageChange) => void)[]) {
      try {
        l(change);
      } catch {
        // a broken watcher must not break the writer
      }
    }
  }

  subscribe(listener: (c: ImageChange) => void): () => void {
    this.emitter.on('change', listener);
    return () => this.emitter.off('change', listener);
  }
}
