// The web console's build: `vite build web` (part of `npm run build`) writes static files to
// web/dist, which `imago serve` serves at / (src/api/web/web-door.ts). Everything is bundled:
// no CDN, nothing fetched at run time. `npm run dev:web` proxies the API to a local imago serve.
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  // Preact's JSX runtime (no Babel preset needed: Vite's own transformer does JSX)
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  resolve: { alias: { react: 'preact/compat', 'react-dom': 'preact/compat' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: { '/api': process.env.IMAGO_URL ?? 'http://127.0.0.1:9393' },
  },
});
