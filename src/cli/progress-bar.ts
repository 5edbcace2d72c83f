/** A one-line progress bar on stderr (only when stderr is a terminal). */
import { humanBytes } from './json.js';

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): { update: (done: number, total?: number) => void; end: () => void } {
  const started = Date.now();
  let last = 0;
  const tty = stream.isTTY === true;
  const draw = (done: number, total?: number) => {
    const secs = Math.max(0.001, (Date.now() - started) / 1000);
    const rate = `${humanBytes(Math.round(done / secs))}/s`;
    if (total && total > 0) {
      const pct = Math.min(100, Math.floor((done * 100) / total));
      const width = 30;
      const fill = Math.round((pct / 100) * width);
      stream.write(
        `\r${label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${String(pct).padStart(3)}% ${humanBytes(done)}/${humanBytes(total)} ${rate}   `,
      );
    } else {
      stream.write(`\r${label} ${humanBytes(done)} ${rate}   `);
    }
  };
  let lastArgs: [number, number | undefined] = [0, undefined];
  return {
    update(done, total) {
      lastArgs = [done, total];
      if (!tty) return;
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      draw(done, total);
    },
    end() {
      if (!tty) return;
      draw(...lastArgs);
      stream.write('\n');
    },
  };
}

/**
 * The same line for a job the server runs (a URL import): its state and, when the server knows
 * the size, its percentage. Only when stderr is a terminal.
 */
export function percentBar(label: string, stream: NodeJS.WriteStream = process.stderr): { update: (state: string, percent?: number) => void; end: () => void } {
  const tty = stream.isTTY === true;
  let drawn = false;
  return {
    update(state, percent) {
      if (!tty) return;
      drawn = true;
      if (percent === undefined) {
        stream.write(`\r${label} ${state}   `);
        return;
      }
      const pct = Math.max(0, Math.min(100, Math.floor(percent)));
      const width = 30;
      const fill = Math.round((pct / 100) * width);
      stream.write(`\r${label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${String(pct).padStart(3)}% ${state}   `);
    },
    end() {
      if (tty && drawn) stream.write('\n');
    },
  };
}
