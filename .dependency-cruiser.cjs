/**
 * The layer rules of docs/ARCHITECTURE.md, checked by `npm run lint` (dependency-cruiser):
 * imports point downwards only, so the map cannot silently drift. A rule names the folder and
 * what it must not import; `npx depcruise src` prints the offending edge.
 */
const ours = '^src/';
module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', comment: 'an import cycle hides which way a dependency points', from: {}, to: { circular: true } },
    {
      name: 'formats-import-nothing-of-ours',
      severity: 'error',
      comment: 'src/formats is pure: bytes → facts; no files, sockets, clocks or other layers',
      from: { path: '^src/formats/' },
      to: { path: ours, pathNot: '^src/formats/' },
    },
    {
      name: 'formats-no-node-io',
      severity: 'error',
      comment: 'src/formats knows nothing of files, sockets, clocks or child processes',
      from: { path: '^src/formats/', pathNot: '(\\.test|-cases)\\.ts$' },
      to: { dependencyTypes: ['core'], path: '^(node:)?(fs|fs/promises|net|http|https|child_process|worker_threads|dgram|tls)$' },
    },
    {
      name: 'io-imports-nothing-of-ours',
      severity: 'error',
      from: { path: '^src/io/' },
      to: { path: ours, pathNot: '^src/io/' },
    },
    {
      name: 'disk-imports-formats-inspect-io',
      severity: 'error',
      comment: 'opening a disk file runs the inspection engine on it first (open-disk.ts), so disk sits above inspect',
      from: { path: '^src/disk/' },
      to: { path: ours, pathNot: '^src/(disk|formats|inspect|io)/' },
    },
    {
      name: 'inspect-imports-formats-io',
      severity: 'error',
      from: { path: '^src/inspect/' },
      to: { path: ours, pathNot: '^src/(inspect|formats|io)/' },
    },
    {
      name: 'store-imports-io',
      severity: 'error',
      from: { path: '^src/store/' },
      to: { path: ours, pathNot: '^src/(store|io)/' },
    },
    {
      name: 'domain-no-framework-or-driver',
      severity: 'error',
      comment: 'the domain is framework-free: persistence lives in src/db, HTTP in src/api',
      from: { path: '^src/domain/' },
      to: { path: '(^|/)node_modules/(kysely|fastify|@fastify|pg|better-sqlite3|typebox|commander)/' },
    },
    {
      name: 'domain-imports-downwards',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { path: ours, pathNot: '^src/(domain|formats|disk|inspect|io|store)/' },
    },
    {
      name: 'db-is-an-adapter',
      severity: 'error',
      comment: 'src/db implements the domain ports; it never reaches into doors, the CLI or the composition root',
      from: { path: '^src/db/' },
      to: { path: '^src/(api|cli|app)' },
    },
    {
      name: 'doors-import-domain-and-http',
      severity: 'error',
      comment:
        'a door (src/api/<door>/) uses the domain and what all doors share (src/api/http); never another door, the database or the store directly (a type of a port, e.g. ByteRange of store/blob-store.ts, may be named: type-only imports are not edges at run time)',
      from: { path: '^src/api/([^/]+)/', pathNot: '^src/api/http/' },
      to: {
        path: ours,
        pathNot: ['^src/api/$1/', '^src/api/http/', '^src/domain/', '^src/formats/', '^src/io/', '^src/config\\.ts$'],
        dependencyTypesNot: ['type-only'],
      },
    },
    {
      name: 'http-shared-imports-domain',
      severity: 'error',
      from: { path: '^src/api/http/' },
      to: { path: ours, pathNot: ['^src/api/http/', '^src/domain/', '^src/io/', '^src/formats/'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'web-console-uses-the-api-only',
      severity: 'error',
      comment: 'web/ is a client of the REST API like any other: it imports nothing of the server (src/)',
      from: { path: '^web/' },
      to: { path: ours },
    },
    {
      name: 'only-the-root-picks-adapters',
      severity: 'error',
      comment: 'src/app.ts is the composition root: nothing below it imports it',
      from: { path: '^src/', pathNot: ['^src/app\\.ts$', '^src/cli/'] },
      to: { path: '^src/app\\.ts$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.tsx', '.js'] },
  },
};
