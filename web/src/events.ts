/**
 * The server's image events (GET /api/v1/events, text/event-stream) read with fetch: EventSource
 * cannot send the Authorization header. Reconnects after a drop (a server restart ends streams
 * with `event: shutdown`) until the caller stops it.
 */
import { authHeaders, type Image } from './api.js';

export interface ImageEvent {
  type: string;
  at: string;
  image: Image;
}

export function watchImages(opts: { image?: string; onEvent: (e: ImageEvent) => void; onError?: (message: string) => void }): () => void {
  const ac = new AbortController();
  let stopped = false;
  const run = async () => {
    while (!stopped) {
      try {
        const res = await fetch(`/api/v1/events${opts.image ? `?image=${encodeURIComponent(opts.image)}` : ''}`, { headers: authHeaders(), signal: ac.signal });
        if (res.status === 401 || res.status === 403) {
          // credentials that no longer work: retrying cannot help
          opts.onError?.(`live updates stopped: the server answered ${res.status}; sign in again`);
          return;
        }
        if (!res.ok || !res.body) throw new Error(`the event stream answered ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end: number;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            let event = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (!data) continue;
            const parsed = JSON.parse(data) as ImageEvent & { detail?: string };
            if (event === 'error') opts.onError?.(parsed.detail ?? 'the event stream ended');
            else if (event !== 'shutdown' && parsed.image) opts.onEvent(parsed);
          }
        }
      } catch (e) {
        if (stopped) return;
        opts.onError?.(`live updates paused: ${(e as Error).message}; reconnecting`);
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 1000));
    }
  };
  void run();
  return () => {
    stopped = true;
    ac.abort();
  };
}
