/**
 * bench/upload-browser — an upload through the web console in Debian's headless Chromium (Uppy's
 * dashboard, tus to /api/v1/uploads, playwright-core) next to `curl -T` of the same file to the
 * same `imago serve` (PUT /api/v1/images/ID/file), same run (issue 12). Each path uploads its own
 * file of the same size (no deduplication); the server's peak RSS (VmHWM, reset before each path)
 * is recorded. The browser's time runs from the click on Upload to the console saying the image
 * is stored (its verdict: the ingest is done).
 *
 * Two more rows separate where the time goes: Chromium sending the same size (one XHR of the
 * File, as tus-js-client sends a PATCH) to a plain node:http sink that discards it — the browser's
 * own limit, no Imago —, and curl sending the whole file as one tus PATCH to Imago — the server's
 * tus path, no browser.
 *
 *   npm run bench -- upload-browser [--mib 4096] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { basename, join } from 'node:path';
import { CHROMIUM, launchChromium, type Browser } from '../test/web/browser.js';
import {
  createImage,
  dataFile,
  discardingSink,
  numberOption,
  peakRss,
  printTable,
  REPO_ROOT,
  serve,
  timeCommand,
  uploadArgs,
  type Served,
} from './support/harness.js';

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 4096, 16);
  if (!existsSync(CHROMIUM)) throw new Error(`Debian's chromium is needed at ${CHROMIUM} (apt-get install chromium; .ci/run installs it)`);
  if (!existsSync(join(REPO_ROOT, 'web', 'dist', 'index.html'))) throw new Error('the console is not built: run npm run build');
  const bytes = mib * 2 ** 20;
  const [curlFile, browserFile, tusFile, xhrFile] = [dataFile(mib, 1), dataFile(mib, 2), dataFile(mib, 3), dataFile(mib, 4)];
  execFileSync('cat', [curlFile, browserFile, tusFile, xhrFile], { stdio: ['ignore', 'ignore', 'inherit'] }); // into the page cache
  const browser = await launchChromium();
  const s = await serve();
  const pid = s.proc.pid!;
  const resetPeak = () => writeFileSync(`/proc/${pid}/clear_refs`, '5');
  let cpuAt = 0;
  /** the server's CPU seconds (every thread) since the last call */
  const cpu = () => {
    const was = cpuAt;
    cpuAt = cpuSeconds(pid);
    return (cpuAt - was).toFixed(1);
  };
  let browserCpuAt = 0;
  /** Chromium's CPU seconds (every process of it) since the last call */
  const chromiumCpu = () => {
    const was = browserCpuAt;
    browserCpuAt = chromiumCpuSeconds();
    return (browserCpuAt - was).toFixed(1);
  };
  try {
    chromiumCpu();
    const toSink = await browserToSink(browser, browserFile);
    const toSinkBrowserCpu = chromiumCpu();

    resetPeak();
    cpu();
    const id = await createImage(s, 'bench-curl');
    const curl = timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', ...uploadArgs(s, id, curlFile)]);
    const curlRss = peakRss(pid) / 2 ** 20;
    const curlCpu = cpu();

    resetPeak();
    const tusPatch = await curlTusPatch(s, tusFile, bytes);
    const tusRss = peakRss(pid) / 2 ** 20;
    const tusCpu = cpu();

    const page = await browser.context.newPage();
    await page.goto(`${s.url}/`);
    await page.getByLabel('API token').fill(s.token);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('heading', { name: 'Images', level: 1 }).waitFor();
    await page.goto(`${s.url}/upload`);
    await page.locator('#upload-protocol', { hasText: 'tus' }).waitFor();
    await page.getByLabel('Project').selectOption('');
    resetPeak();
    cpu();
    chromiumCpu();
    const xhr = await browserTusPatch(page, s, xhrFile, bytes);
    const xhrRss = peakRss(pid) / 2 ** 20;
    const xhrCpu = cpu();
    const xhrBrowserCpu = chromiumCpu();

    await page.locator('.uppy-Dashboard-input').first().setInputFiles(browserFile);
    resetPeak();
    cpu();
    chromiumCpu();
    const t0 = performance.now();
    await page.locator('.uppy-StatusBar-actionBtn--upload').click();
    await page.locator('.results li.ok', { hasText: basename(browserFile) }).waitFor({ timeout: 0 });
    const inBrowser = (performance.now() - t0) / 1000;
    const browserRss = peakRss(pid) / 2 ** 20;
    const browserCpu = cpu();
    const consoleBrowserCpu = chromiumCpu();

    const mbps = (t: number) => (bytes / 1e6 / t).toFixed(0);
    process.stdout.write(`upload of ${mib} MiB (incompressible) to one imago serve: the console in headless Chromium (tus) vs curl -T (plain PUT)\n`);
    printTable([
      ['path', 'seconds', 'MB/s', 'server peak RSS MiB', 'server CPU s', 'Chromium CPU s', 'ratio / curl (throughput; goal for the console ≥ 0.8)'],
      ['curl -T, PUT /api/v1/images/ID/file', curl.toFixed(2), mbps(curl), curlRss.toFixed(0), curlCpu, '-', '1.00'],
      [
        'console (Uppy + tus) in Chromium',
        inBrowser.toFixed(2),
        mbps(inBrowser),
        browserRss.toFixed(0),
        browserCpu,
        consoleBrowserCpu,
        (curl / inBrowser).toFixed(2),
      ],
      [
        '(a) Chromium, one XHR of the File to a discarding node:http sink',
        toSink.toFixed(2),
        mbps(toSink),
        '-',
        '-',
        toSinkBrowserCpu,
        (curl / toSink).toFixed(2),
      ],
      [
        '(b) curl, the whole file as one tus PATCH to /api/v1/uploads',
        tusPatch.toFixed(2),
        mbps(tusPatch),
        tusRss.toFixed(0),
        tusCpu,
        '-',
        (curl / tusPatch).toFixed(2),
      ],
      [
        '(c) Chromium, one XHR tus PATCH of the File to /api/v1/uploads (no Uppy)',
        xhr.toFixed(2),
        mbps(xhr),
        xhrRss.toFixed(0),
        xhrCpu,
        xhrBrowserCpu,
        (curl / xhr).toFixed(2),
      ],
    ]);
  } finally {
    await browser.close();
    await s.stop();
  }
}

/** CPU seconds (user + system, every thread) process `pid` has used. */
function cpuSeconds(pid: number): number {
  // fields after the command's closing parenthesis: state is field 3, utime 14, stime 15
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** CPU seconds used by every Chromium process this bench started (the descendants of this process named chromium). */
function chromiumCpuSeconds(): number {
  const procs = new Map<number, { ppid: number; comm: string; cpu: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const f = stat.slice(close + 2).split(' ');
      procs.set(Number(d), { ppid: Number(f[1]), comm: stat.slice(stat.indexOf('(') + 1, close), cpu: (Number(f[11]) + Number(f[12])) / 100 });
    } catch {
      // gone meanwhile
    }
  }
  const mine = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 20; p = procs.get(p)?.ppid ?? 0, hops++) if (p === process.pid) return true;
    return false;
  };
  let sum = 0;
  for (const [pid, p] of procs) if (p.comm.startsWith('chromium') && mine(pid)) sum += p.cpu;
  return sum;
}

/** Seconds Chromium takes to send `file` as one XHR tus PATCH from the signed-in console's page (no Uppy), answered once the image is stored. */
async function browserTusPatch(page: Page, s: Served, file: string, bytes: number): Promise<number> {
  const id = await createImage(s, 'bench-tus-xhr');
  // a file input of the bench's own, beside the console's (Uppy's dashboard keeps what it is given)
  await page.evaluate(`document.body.insertAdjacentHTML('beforeend', '<input type="file" id="bench-file" aria-label="bench file" hidden>')`);
  await page.locator('#bench-file').setInputFiles(file);
  const ms = await page.evaluate<number>(`(async () => {
    const f = document.querySelector('#bench-file').files[0];
    const auth = { authorization: 'Bearer ' + ${JSON.stringify(s.token)}, 'tus-resumable': '1.0.0' };
    const created = await fetch('/api/v1/uploads', { method: 'POST', headers: { ...auth, 'upload-length': String(${bytes}), 'upload-metadata': 'image_id ' + btoa(${JSON.stringify(id)}) } });
    if (created.status !== 201) throw new Error('POST /api/v1/uploads answered ' + created.status);
    const t0 = performance.now();
    await new Promise((resolve, reject) => {
      const x = new XMLHttpRequest();
      x.open('PATCH', created.headers.get('location'));
      for (const [k, v] of Object.entries(auth)) x.setRequestHeader(k, v);
      x.setRequestHeader('upload-offset', '0');
      x.setRequestHeader('content-type', 'application/offset+octet-stream');
      x.onload = () => (x.status === 204 ? resolve() : reject(new Error('the PATCH answered ' + x.status + ' ' + x.responseText)));
      x.onerror = () => reject(new Error('the PATCH failed'));
      x.send(f);
    });
    return performance.now() - t0;
  })()`);
  await page.evaluate(`document.querySelector('#bench-file').remove()`);
  return ms / 1000;
}

/** Seconds Chromium takes to send `file` (a File from an <input type=file>) as one XHR PUT body to a sink that discards it. */
async function browserToSink(browser: Browser, file: string): Promise<number> {
  const sink = await discardingSink();
  const page = await browser.context.newPage();
  try {
    await page.goto(sink.url);
    await page.locator('#file').setInputFiles(file);
    // a string: the page's code runs in the browser (no DOM types in the bench's compilation)
    const ms = await page.evaluate<number>(`(async () => {
      const f = document.querySelector('#file').files[0];
      const t0 = performance.now();
      await new Promise((resolve, reject) => {
        const x = new XMLHttpRequest();
        x.open('PUT', '/sink');
        x.setRequestHeader('content-type', 'application/offset+octet-stream');
        x.onload = () => (x.status === 200 ? resolve() : reject(new Error('the sink answered ' + x.status)));
        x.onerror = () => reject(new Error('the XHR to the sink failed'));
        x.send(f);
      });
      return performance.now() - t0;
    })()`);
    return ms / 1000;
  } finally {
    await page.close();
    sink.stop();
  }
}

/** Seconds curl takes to send `file` as one tus PATCH (after the upload's creation, not timed), answered once the image is stored. */
async function curlTusPatch(s: Served, file: string, bytes: number): Promise<number> {
  const id = await createImage(s, 'bench-tus-curl');
  const b64 = (v: string) => Buffer.from(v).toString('base64');
  const created = await s.fetch('/api/v1/uploads', {
    method: 'POST',
    headers: { 'tus-resumable': '1.0.0', 'upload-length': String(bytes), 'upload-metadata': `image_id ${b64(id)},filename ${b64(basename(file))}` },
  });
  const location = created.headers.get('location');
  if (created.status !== 201 || !location) throw new Error(`imago: POST /api/v1/uploads answered ${created.status}: ${await created.text()}`);
  return timeCommand('curl', [
    '-sS',
    '-f',
    '-o',
    '/dev/null',
    ...s.curlAuth,
    '-X',
    'PATCH',
    '-H',
    'tus-resumable: 1.0.0',
    '-H',
    'upload-offset: 0',
    '-H',
    'content-type: application/offset+octet-stream',
    '-T',
    file,
    new URL(location, s.url).href,
  ]);
}
