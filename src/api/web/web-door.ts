/**
 * The web console's door: the static files Vite built from `web/` (index.html, hashed assets),
 * served at `/`, and index.html again at each of the console's own page paths so a reload or a
 * shared link of `/images/<id>` opens that page (the SPA fallback). Every other path stays the
 * other doors' (`/api/v1`, `/v2/`, `/image`) or a problem+json 404: the fallback is a list of the
 * console's routes, not a catch-all that would answer an API typo with HTML.
 *
 * The files are read once when the server starts (the whole console is a few hundred KiB), so a
 * request never touches the filesystem and no path from a URL is ever joined to a directory.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';

/** Where the console's pages live (web/src/routes.ts has the same list): each answers index.html. */
export const CONSOLE_PAGES = [
  '/',
  '/signin',
  '/signin/callback',
  '/images',
  '/images/:id',
  '/upload',
  '/import',
  '/tokens',
  '/projects',
  '/audit',
  '/gc',
] as const;

export interface WebDoorOptions {
  /** the folder `vite build` wrote (web/dist) */
  dir: string;
  /** origins the console may fetch besides its own (the OIDC issuer's discovery and token endpoints) */
  connectOrigins: string[];
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** The built console is small; a folder far bigger than that is not one. */
const MAX_CONSOLE_BYTES = 32 * 1024 * 1024;

interface StaticFile {
  body: Buffer;
  type: string;
  /** hashed file names never change content: cached for a year; index.html is revalidated */
  immutable: boolean;
}

function readConsole(dir: string): Map<string, StaticFile> | undefined {
  let total = 0;
  const files = new Map<string, StaticFile>();
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) {
        total += statSync(path).size;
        if (total > MAX_CONSOLE_BYTES) throw new Error(`the console folder ${dir} holds over ${MAX_CONSOLE_BYTES} bytes; is IMAGO_CONSOLE_DIR right?`);
        const url = `/${relative(dir, path).split(sep).join('/')}`;
        files.set(url, {
          body: readFileSync(path),
          type: TYPES[extname(path)] ?? 'application/octet-stream',
          immutable: url.startsWith('/assets/'),
        });
      }
    }
  };
  try {
    if (!statSync(join(dir, 'index.html')).isFile()) return undefined;
  } catch {
    return undefined;
  }
  walk(dir);
  return files;
}

export const webDoor: FastifyPluginAsync<WebDoorOptions> = async (app, opts) => {
  const files = readConsole(opts.dir);
  const csp = [
    "default-src 'self'",
    `connect-src 'self' ${opts.connectOrigins.join(' ')}`.trim(),
    "img-src 'self' data: blob:",
    // Uppy's dashboard sets style attributes on its elements
    "style-src 'self' 'unsafe-inline'",
    "script-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
  const send = (reply: FastifyReply, f: StaticFile) =>
    reply
      .header('content-type', f.type)
      .header('cache-control', f.immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      .header('x-content-type-options', 'nosniff')
      .header('content-security-policy', csp)
      .header('referrer-policy', 'no-referrer')
      .send(f.body);

  const index = files?.get('/index.html');
  for (const page of CONSOLE_PAGES) {
    app.get(page, async (req, reply) => {
      if (!index) {
        return reply
          .code(503)
          .type('text/plain; charset=utf-8')
          .send(`The web console is not built: ${opts.dir}/index.html is missing. Run "npm run build" (it builds web/ with Vite), then restart imago serve.\n`);
      }
      return send(reply, index);
    });
  }
  for (const [url, f] of files ?? []) {
    // a name the router would read as a parameter or wildcard (: *) is not one Vite writes: left out
    if (url === '/index.html' || (CONSOLE_PAGES as readonly string[]).includes(url) || !/^[\w./-]+$/.test(url)) continue;
    app.get(url, async (_req, reply) => send(reply, f));
  }
};
