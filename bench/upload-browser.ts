/**
 * bench/upload-browser — an upload through the web console in Debian's headless Chromium (Uppy's
 * dashboard, tus to /api/v1/uploads, playwright-core) next to `curl -T` of the same file to the
 * same `imago serve` (PUT /api/v1/images/ID/file), same run (issue 12). Each path uploads its own
 * file of the same size (no deduplication); the server's peak RSS (VmHWM, reset before each path)
 * is recorded. The browser's time runs from the click on Upload to the console saying the image
 * is stored (its verdict: the ingest is done).
 *
 *   npm run bench -- upload-browser [--mib 4096] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CHROMIUM, launchChromium } from '../test/web/browser.js';
import { createImage, dataFile, numberOption, peakRss, printTable, REPO_ROOT, serve, timeCommand, uploadArgs } from './support/harness.js';

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 4096, 16);
  if (!existsSync(CHROMIUM)) throw new Error(`Debian's chromium is needed at ${CHROMIUM} (apt-get install chromium; .ci/run installs it)`);
  if (!existsSync(join(REPO_ROOT, 'web', 'dist', 'index.html'))) throw new Error('the console is not built: run npm run build');
  const bytes = mib * 2 ** 20;
  const [curlFile, browserFile] = [dataFile(mib, 1), dataFile(mib, 2)];
  execFileSync('cat', [curlFile, browserFile], { stdio: ['ignore', 'ignore', 'inherit'] }); // both into the page cache
  const s = await serve();
  const pid = s.proc.pid!;
  const resetPeak = () => writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const browser = await launchChromium();
  try {
    resetPeak();
    const id = await createImage(s, 'bench-curl');
    const curl = timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', ...uploadArgs(s, id, curlFile)]);
    const curlRss = peakRss(pid) / 2 ** 20;

    const page = await browser.context.newPage();
    await page.goto(`${s.url}/`);
    await page.getByLabel('API token').fill(s.token);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('heading', { name: 'Images', level: 1 }).waitFor();
    await page.goto(`${s.url}/upload`);
    await page.locator('#upload-protocol', { hasText: 'tus' }).waitFor();
    await page.getByLabel('Project').selectOption('');
    await page.locator('.uppy-Dashboard-input').first().setInputFiles(browserFile);
    resetPeak();
    const t0 = performance.now();
    await page.locator('.uppy-StatusBar-actionBtn--upload').click();
    await page.locator('.results li.ok', { hasText: basename(browserFile) }).waitFor({ timeout: 0 });
    const inBrowser = (performance.now() - t0) / 1000;
    const browserRss = peakRss(pid) / 2 ** 20;

    const mbps = (t: number) => (bytes / 1e6 / t).toFixed(0);
    process.stdout.write(`upload of ${mib} MiB (incompressible) to one imago serve: the console in headless Chromium (tus) vs curl -T (plain PUT)\n`);
    printTable([
      ['path', 'seconds', 'MB/s', 'server peak RSS MiB', 'ratio browser / curl (throughput; goal ≥ 0.8)'],
      ['curl -T, PUT /api/v1/images/ID/file', curl.toFixed(2), mbps(curl), curlRss.toFixed(0), '1.00'],
      ['console (Uppy + tus) in Chromium', inBrowser.toFixed(2), mbps(inBrowser), browserRss.toFixed(0), (curl / inBrowser).toFixed(2)],
    ]);
  } finally {
    await browser.close();
    await s.stop();
  }
}
