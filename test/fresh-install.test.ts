/**
 * A fresh clone installs cleanly: `npm install` leaves package-lock.json as committed, and no
 * locked package refuses the Node 20 that package.json's `engines` accepts (npm only warns,
 * EBADENGINE, but the package may then break). Checked on the committed files; the full install
 * was verified by hand in a scratch clone (`npm ci`, then `npm install`, then `git status`).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = join(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string };
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<
    string,
    {
      version?: string;
      engines?: { node?: string } | string[];
      hasInstallScript?: boolean;
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
    }
  >;
};

type Version = [number, number, number];

function parseVersion(v: string): Version {
  const [a = '0', b = '0', c = '0'] = v.replace(/^v/, '').split(/[.-]/);
  return [a, b, c].map((x) => (x === 'x' || x === '*' ? 0 : Number(x))) as Version;
}

function cmp(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** The subset of semver ranges npm packages write in `engines.node`: `||`, `>= > < <= = ^ ~`, `X.x`, `*`. */
function satisfies(version: string, range: string): boolean {
  const v = parseVersion(version);
  return range.split('||').some((alt) => {
    const parts = alt
      .trim()
      .replace(/([<>=^~]+)\s+/g, '$1')
      .split(/\s+/)
      .filter(Boolean);
    return parts.every((p) => {
      if (p === '*' || p === 'x') return true;
      const m = /^(>=|<=|>|<|=|\^|~)?v?(\d+(?:\.(?:\d+|x))?(?:\.(?:\d+|x))?)/.exec(p);
      if (!m) throw new Error(`engine range "${range}" not understood`);
      const op = m[1] ?? (/x|^\d+$|^\d+\.\d+$/.test(m[2]!) ? 'x' : '=');
      const w = parseVersion(m[2]!);
      const c = cmp(v, w);
      const fields = m[2]!.split('.').filter((f) => f !== 'x').length;
      switch (op) {
        case '>=':
          return c >= 0;
        case '>':
          return c > 0;
        case '<':
          return c < 0;
        case '<=':
          return c <= 0;
        case '=':
          return c === 0;
        case '^':
          return c >= 0 && (w[0] > 0 ? v[0] === w[0] : v[0] === 0 && v[1] === w[1]);
        case '~':
          return c >= 0 && v[0] === w[0] && v[1] === w[1];
        default:
          return v.slice(0, fields).every((n, i) => n === w[i]);
      }
    });
  });
}

test('the engine-range reader agrees with npm on the ranges found in the lock', () => {
  assert.ok(satisfies('20.10.0', '>=20.10'));
  assert.ok(!satisfies('20.9.0', '>=20.10'));
  assert.ok(!satisfies('20.20.2', '>=22'));
  assert.ok(satisfies('20.20.2', '20.x || 22.x || 23.x'));
  assert.ok(!satisfies('21.1.0', '20.x || 22.x'));
  assert.ok(satisfies('20.10.0', '^8.16.0 || ^10.6.0 || >=11.0.0'));
  assert.ok(satisfies('20.10.0', '>= 10.x'));
  assert.ok(satisfies('20.10.0', '*'));
});

test('every locked package accepts every Node that package.json accepts (no EBADENGINE)', () => {
  const floor = /^>=\s*(\d+\.\d+(?:\.\d+)?)$/.exec(pkg.engines.node)?.[1];
  assert.ok(floor, `package.json engines.node "${pkg.engines.node}" should be a >= range`);
  const nodes = [...new Set([floor, '20.20.2', process.version.slice(1)])].filter((v) => satisfies(v, pkg.engines.node));
  const refusing: string[] = [];
  for (const [path, p] of Object.entries(lock.packages)) {
    const range = Array.isArray(p.engines) ? undefined : p.engines?.node;
    if (!range) continue;
    for (const n of nodes) if (!satisfies(n, range)) refusing.push(`${path.replace(/^.*node_modules\//, '')}@${p.version} needs node ${range}, not ${n}`);
  }
  assert.deepEqual(refusing, []);
});

test('the lock file is what npm install writes for this package.json (root entry in sync)', () => {
  const root = lock.packages['']!;
  const hasInstallScript = ['preinstall', 'install', 'postinstall'].some((k) => k in pkg.scripts);
  assert.equal(root.hasInstallScript === true, hasInstallScript, 'npm records hasInstallScript for a root install script');
  assert.deepEqual(root.dependencies, pkg.dependencies);
  assert.deepEqual(root.devDependencies, pkg.devDependencies);
});
