// ESLint (flat config): typescript-eslint's recommended rules over src/, test/ and bench/.
// Layer rules (which folder may import which) are checked by dependency-cruiser
// (.dependency-cruiser.cjs); formatting is Prettier's (npm run lint runs all three).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'native/', 'imago-data/', 'web/dist/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module' },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // `typeof import('../app.js')` types a module loaded lazily (the CLI starts without the server)
      '@typescript-eslint/consistent-type-imports': ['error', { disallowTypeAnnotations: false }],
      // a `let` assigned once after the closures that read it were made (e.g. a request and its timers)
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // a migration runs against the schema as it was then, not today's: Kysely's documented `Kysely<any>`
    files: ['src/db/migrations.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // tests read JSON answers of many shapes; `any` there is the honest type of `await res.json()`
    files: ['test/**/*.ts', '**/*.test.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
