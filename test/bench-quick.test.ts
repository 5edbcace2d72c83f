/**
 * Benchmarks cannot rot: every bench in bench/ (the list comes from the directory, so a new one
 * cannot be forgotten) runs in its quick mode as a child process — `node --import tsx bench/run.ts
 * NAME --quick`, the real servers, tools and peers at tiny sizes — and must exit 0 and print its
 * table with a ratio column holding a number. The figures themselves are not asserted: on these
 * shared machines they are noise at this size.
 *
 * The Glance peer is started once here (through ../shared/peers, as the benches do), so the benches
 * that compare with it find it running and leave it; it is stopped at the end unless it was
 * already running before. Before that, a start that cannot succeed (its port held by something
 * else) must fail with the reason: a bench never runs without its peer.
 */
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { after, test } from 'node:test';
import { benchNames } from '../bench/support/bench-names.js';
import { GLANCE_URL, startGlance, type GlancePeer } from '../bench/support/glance-peer.js';

const ROOT = join(import.meta.dirname, '..');

function runQuick(name: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join('bench', 'run.ts'), name, '--quick'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The first markdown-style table of the output: header cells and data rows (separator rows dropped). */
function firstTable(out: string): { header: string[]; rows: string[][] } | undefined {
  const lines = out.split('\n');
  const start = lines.findIndex((l) => l.startsWith('|'));
  if (start < 0) return undefined;
  const cells = (l: string) =>
    l
      .slice(1, -1)
      .split('|')
      .map((c) => c.trim());
  const table: string[][] = [];
  for (let i = start; i < lines.length && lines[i]!.startsWith('|'); i++) table.push(cells(lines[i]!.trimEnd()));
  return { header: table[0]!, rows: table.slice(1).filter((r) => !r.every((c) => /^-+$/.test(c))) };
}

let glance: GlancePeer | undefined;
after(async () => {
  await glance?.stop();
});

test('a bench fails with the reason when the Glance peer cannot start', async (t) => {
  if (
    await fetch(`${GLANCE_URL}/versions`).then(
      () => true,
      () => false,
    )
  )
    return t.skip('a Glance (or something else) already answers on its port');
  // something else holds Glance's port and answers 500: glance-api cannot bind and dies
  const squatter = createServer((_req, res) => res.writeHead(500).end());
  await new Promise<void>((r) => squatter.listen(9292, '127.0.0.1', r));
  try {
    await assert.rejects(startGlance(), /the Glance peer did not start \(.*glance-start\.sh\): .*died/s);
  } finally {
    await new Promise((r) => squatter.close(r));
  }
});

test('the Glance peer starts through ../shared/peers', async () => {
  glance = await startGlance();
  assert.equal((await fetch(`${glance.url}/versions`)).status < 500, true);
});

test('the bench directory holds the benchmarks the issue names', () => {
  for (const name of ['convert', 'download', 'ingest', 'inspect', 'list', 'memory'])
    assert.ok(benchNames().includes(name), `bench/${name}.ts is missing from ${benchNames().join(', ')}`);
});

for (const name of benchNames()) {
  test(`bench ${name} --quick completes and prints its table with a ratio column`, { timeout: 150_000 }, async () => {
    const { code, stdout, stderr } = await runQuick(name);
    assert.equal(code, 0, `bench ${name} --quick exited ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
    const table = firstTable(stdout);
    assert.ok(table, `bench ${name} --quick printed no table:\n${stdout}`);
    const ratio = table.header.findIndex((h) => /ratio/i.test(h));
    assert.ok(ratio >= 0, `bench ${name}: no ratio column in ${table.header.join(' | ')}`);
    assert.ok(
      table.rows.some((r) => Number.isFinite(Number(r[ratio]))),
      `bench ${name}: the ratio column "${table.header[ratio]}" holds no number:\n${stdout}`,
    );
  });
}
