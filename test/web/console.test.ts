/**
 * The web console in Debian's real Chromium against a real Imago (SQLite, filesystem blobs):
 * sign in, upload a sparse 1 GiB qcow2 through Uppy's dashboard and see the sha256 sha256sum
 * gives, a hostile qcow2 (backing file) refused with its reason, a URL import with live
 * progress, sharing with another project's user who then sees the image, the quota bar moving,
 * problem+json errors shown, the narrow layout; axe-core on every page, a screenshot of each.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Page } from 'playwright-core';
import { CONSOLE_PAGES } from '../../src/api/web/web-door.js';
import { apiRequest, startTestServer, type TestServer } from '../support/server.js';
import { axeSerious, CHROMIUM, describeViolations, launchChromium, screenshot, type Browser } from './browser.js';

const CONSOLE_BUILT = existsSync(join(import.meta.dirname, '..', '..', 'web', 'dist', 'index.html'));
const skip = !existsSync(CHROMIUM)
  ? `Debian's chromium is not installed (${CHROMIUM}): apt-get install -y chromium (.ci/run does)`
  : !CONSOLE_BUILT
    ? 'the console is not built (web/dist): run npm run build'
    : false;

let s: TestServer;
let browser: Browser;
let admin: Page;
let work: string;
let files: http.Server;
let filesUrl: string;
let good: string;
let bobToken: string;
let uploadedId: string;

const GiB = 1024 ** 3;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'imago-web-'));
  // a sparse 1 GiB guest with 4 MiB of data in it, as qcow2: small on disk
  const raw = join(work, 'guest.raw');
  sh('truncate', ['-s', '1G', raw]);
  sh('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=4', 'seek=100', 'conv=notrunc', 'status=none']);
  good = join(work, 'guest.qcow2');
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, good]);
  rmSync(raw);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', join(work, 'base.qcow2'), '64M']);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(work, 'base.qcow2'), '-F', 'qcow2', join(work, 'hostile.qcow2')]);
  // a slow file server for the URL import: 64 KiB every 25 ms, so progress is seen moving
  files = http.createServer((req, res) => {
    const path = join(work, 'guest.qcow2');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': statSync(path).size });
    const rs = createReadStream(path, { highWaterMark: 64 * 1024 });
    rs.on('data', (chunk) => {
      res.write(chunk);
      rs.pause();
      setTimeout(() => rs.resume(), 25);
    });
    rs.on('end', () => res.end());
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;

  s = await startTestServer({ env: { IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
  for (const name of ['alpha', 'beta']) assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name })).status, 201);
  assert.equal((await apiRequest(s, 'PUT', '/api/v1/projects/alpha/quota', { storedBytes: 2 * GiB })).status, 200);
  const bob = await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'bob-console', project: 'beta', role: 'writer', user: 'bob' });
  assert.equal(bob.status, 201, bob.text);
  bobToken = bob.json!.token;
  browser = await launchChromium();
  admin = await browser.context.newPage();
});

after(async () => {
  await browser?.close();
  await s?.stop();
  files?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function signIn(page: Page, token: string): Promise<void> {
  await page.goto(`${s.url}/`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { name: 'Images', level: 1 }).waitFor();
}

/** axe on the page as shown, and its screenshot; a serious or critical violation fails the test. */
async function checkPage(page: Page, name: string): Promise<void> {
  await screenshot(page, name);
  const v = await axeSerious(page);
  assert.deepEqual(v, [], `axe-core on the ${name} page:\n${describeViolations(v)}`);
}

async function storedUsed(page: Page, project: string): Promise<number> {
  await page.goto(`${s.url}/projects`);
  const bar = page.locator(`section[data-project="${project}"] .usage[data-kind="stored"]`);
  await bar.waitFor();
  return Number(await bar.getAttribute('data-used'));
}

async function uploadThroughDashboard(page: Page, path: string, project: string): Promise<void> {
  await page.goto(`${s.url}/upload`);
  await page.locator('#upload-protocol', { hasText: /tus|plain/ }).waitFor();
  await page.getByLabel('Project').selectOption(project);
  await page.locator('.uppy-Dashboard-input').first().setInputFiles(path);
  await page.locator('.uppy-StatusBar-actionBtn--upload').click();
}

test("sign-in page: a wrong token is refused with the server's message; axe passes", { skip }, async () => {
  await admin.goto(`${s.url}/`);
  await admin.getByRole('heading', { name: 'Sign in to Imago' }).waitFor();
  await checkPage(admin, 'sign-in');
  await admin.getByLabel('API token').fill('imago_not-a-real-token');
  await admin.getByRole('button', { name: 'Sign in', exact: true }).click();
  const problem = admin.getByRole('alert');
  await problem.waitFor();
  assert.match(await problem.innerText(), /401/);
  await signIn(admin, s.token);
  assert.equal(await admin.evaluate<string | null>(`sessionStorage.getItem('imago.token')`), s.token, 'the token is kept in sessionStorage');
});

test('upload a sparse 1 GiB qcow2 through the dashboard: ready, the sha256 of sha256sum, the quota bar moves', { skip }, async () => {
  const before = await storedUsed(admin, 'alpha');
  await checkPage(admin, 'projects');
  await admin.goto(`${s.url}/upload`);
  await admin.locator('.uppy-Dashboard-input').first().waitFor({ state: 'attached' });
  await checkPage(admin, 'upload');
  await uploadThroughDashboard(admin, good, 'alpha');
  const result = admin.locator('.results li.ok', { hasText: 'guest.qcow2' });
  await result.waitFor({ timeout: 60_000 });
  // the dashboard with its file, done: progress shown, and still no serious axe violation
  await admin.locator('.uppy-StatusBar.is-complete').waitFor();
  await checkPage(admin, 'upload-done');
  await result.getByRole('link').click();
  await admin.locator('.badge.state-ready').first().waitFor({ timeout: 60_000 });
  uploadedId = new URL(admin.url()).pathname.split('/').pop()!;
  const shown = (await admin.locator('code.digest').innerText()).trim();
  const expected = sh('sha256sum', [good]).split(' ')[0];
  assert.equal(shown, expected, 'the details page shows the sha256 sha256sum computes');
  const facts = await admin.locator('dl.facts').nth(1).innerText();
  assert.match(facts, /1073741824 bytes/, 'virtual size 1 GiB');
  assert.match(facts, new RegExp(`${statSync(good).size} bytes`), 'stored size = the file');
  assert.match(await admin.locator('body').innerText(), new RegExp(`${new URL(s.url).host}/alpha/guest.qcow2:latest`), 'the OCI name');
  await checkPage(admin, 'image-details');
  const afterUpload = await storedUsed(admin, 'alpha');
  assert.equal(afterUpload - before, statSync(good).size, 'the stored bar grew by the stored bytes');
  assert.match(await admin.locator('section[data-project="alpha"]').innerText(), /Stored: 4\.31 MiB of 2\.00 GiB \(0%\)/);
  assert.equal(
    Number(await admin.locator('section[data-project="alpha"] .usage[data-kind="stored"] progress').getAttribute('value')),
    afterUpload,
    'the bar is filled to the stored bytes',
  );
  // convert-on-import: the project's setting is shown as saved
  await admin.getByLabel('Convert on import to').first().selectOption('qcow2');
  await admin.getByRole('button', { name: 'Save conversion of alpha' }).click();
  await admin.getByRole('status').filter({ hasText: 'Convert-on-import of alpha saved.' }).waitFor();
  assert.equal(await admin.getByLabel('Convert on import to').first().inputValue(), 'qcow2');
  await admin.reload();
  await admin.locator('section[data-project="alpha"]').waitFor();
  assert.equal(await admin.getByLabel('Convert on import to').first().inputValue(), 'qcow2', 'read back from the server');
  await admin.getByLabel('Convert on import to').first().selectOption('');
  await admin.getByRole('button', { name: 'Save conversion of alpha' }).click();
  await admin.getByRole('status').filter({ hasText: 'Convert-on-import of alpha saved.' }).waitFor();
});

test('a hostile qcow2 (backing file) is refused and the console says why', { skip }, async () => {
  await uploadThroughDashboard(admin, join(work, 'hostile.qcow2'), 'alpha');
  const result = admin.locator('.results li.failed', { hasText: 'hostile.qcow2' });
  await result.waitFor({ timeout: 60_000 });
  assert.match(await result.locator('.upload-refusal').innerText(), /backing/i);
  await result.getByRole('link').click();
  const reason = admin.locator('.state-reason');
  await reason.waitFor();
  assert.match(await reason.innerText(), /backing/i);
  await screenshot(admin, 'image-refused');
});

test('URL import with live progress', { skip }, async () => {
  await admin.goto(`${s.url}/import`);
  await checkPage(admin, 'import');
  await admin.getByLabel('URL').fill(`${filesUrl}/guest.qcow2`);
  await admin.getByLabel('Name', { exact: true }).fill('imported');
  await admin.getByLabel('Project').selectOption('alpha');
  await admin.getByRole('button', { name: 'Start import' }).click();
  await admin.waitForURL(/\/images\/[^/]+$/);
  // the progress the server events carry, as the page shows it, until ready
  const seen = new Set<number>();
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (await admin.locator('.badge.state-ready').count()) break;
    const v = await admin
      .locator('.progress-value')
      .innerText({ timeout: 200 })
      .catch(() => undefined);
    if (v) seen.add(Number(v.replace('%', '')));
    await admin.waitForTimeout(50);
  }
  await admin.locator('.badge.state-ready').first().waitFor({ timeout: 1000 });
  assert.ok(
    [...seen].some((p) => p > 0 && p < 100),
    `progress between 0 and 100 was shown live (saw ${[...seen].join(', ')})`,
  );
  assert.equal((await admin.locator('code.digest').innerText()).trim(), sh('sha256sum', [good]).split(' ')[0]);
});

test('share with another project: its user accepts the offer and then sees the image', { skip }, async () => {
  await admin.goto(`${s.url}/images/${uploadedId}`);
  await admin.getByLabel('Visibility').selectOption('shared');
  await admin.getByRole('button', { name: 'Save visibility' }).click();
  await admin
    .locator('.sharing-status', { hasText: 'Visibility is shared.' })
    .waitFor({ timeout: 10_000 })
    .catch(async (e: Error) => {
      // what the page said instead (a problem banner, another status)
      throw new Error(`${e.message}\nthe page showed:\n${(await admin.locator('main').innerText()).slice(0, 3000)}`);
    });
  await admin.getByLabel('Share with project').fill('beta');
  await admin.getByRole('button', { name: 'Share', exact: true }).click();
  await admin.locator('.members li, [role=alert]', { hasText: /beta/ }).first().waitFor();
  assert.equal(await admin.getByRole('alert').count(), 0, await admin.locator('body').innerText());
  assert.match(await admin.locator('.members li', { hasText: 'beta' }).innerText(), /pending/);

  const bob = await browser.context.newPage();
  try {
    await signIn(bob, bobToken);
    await bob.getByRole('button', { name: 'Accept guest.qcow2' }).click();
    await bob.getByRole('table').getByRole('link', { name: 'guest.qcow2' }).waitFor();
    await bob.getByRole('table').getByRole('link', { name: 'guest.qcow2' }).click();
    await bob.locator('.badge.state-ready').first().waitFor();
  } finally {
    await bob.close();
  }
  await admin.reload();
  await admin.locator('.members li', { hasText: 'beta' }).waitFor();
  assert.match(await admin.locator('.members li', { hasText: 'beta' }).innerText(), /accepted/);
});

test('images list: filters and sort through the API; the other pages pass axe; errors show the problem', { skip }, async () => {
  await admin.goto(`${s.url}/images`);
  await admin.getByRole('table').waitFor();
  await checkPage(admin, 'images');
  await admin.getByLabel('State').selectOption('error');
  await admin.getByRole('button', { name: 'Apply filters' }).click();
  await admin.getByRole('table').getByRole('link', { name: 'guest.qcow2' }).waitFor({ state: 'detached' });
  await admin.getByRole('table').getByRole('link', { name: 'hostile.qcow2' }).waitFor();
  assert.equal(await admin.getByRole('table').getByRole('link').count(), 1, 'only the image in error');

  await admin.goto(`${s.url}/tokens`);
  await admin.getByLabel('Name', { exact: true }).fill('ci-token');
  await admin.getByLabel('Project').selectOption('alpha');
  await admin.getByRole('button', { name: 'Create token' }).click();
  const secret = await admin.getByLabel('New token').inputValue();
  assert.ok(secret.length > 20, 'the secret is shown once');
  await checkPage(admin, 'tokens');
  await admin.getByRole('button', { name: 'I have copied it' }).click();
  await admin.getByRole('button', { name: 'Revoke ci-token' }).click();
  await admin.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click();
  await admin
    .getByRole('row', { name: /ci-token/ })
    .getByText(/revoked/)
    .waitFor();
  assert.equal((await fetch(`${s.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${secret}` } })).status, 401, 'the revoked token no longer works');

  await admin.goto(`${s.url}/audit`);
  await admin.getByRole('table').waitFor();
  await admin.getByLabel('Action').fill('token.revoke');
  await admin.getByRole('button', { name: 'Apply filters' }).click();
  await admin.getByRole('cell', { name: 'token.revoke' }).first().waitFor();
  await checkPage(admin, 'audit');

  await admin.goto(`${s.url}/gc`);
  await admin.locator('.gc-reclaimable').waitFor();
  await checkPage(admin, 'gc');

  // an error is the server's problem+json detail, never a blank page
  await admin.goto(`${s.url}/images/00000000-0000-0000-0000-000000000000`);
  const alert = admin.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /404/);
  assert.match(await alert.innerText(), /request id/);
  await checkPage(admin, 'not-found');

  // narrow window: no sideways scrolling of the page itself
  await admin.setViewportSize({ width: 390, height: 800 });
  for (const path of ['/images', `/images/${uploadedId}`, '/projects', '/upload']) {
    await admin.goto(`${s.url}${path}`);
    await admin.getByRole('heading', { level: 1 }).waitFor();
    await admin.waitForTimeout(100);
    const overflow = await admin.evaluate<number>(`document.documentElement.scrollWidth - window.innerWidth`);
    assert.ok(overflow <= 1, `${path} is ${overflow}px wider than a 390px window`);
  }
  await screenshot(admin, 'images-narrow');
  await admin.setViewportSize({ width: 1280, height: 900 });
});

test('keyboard only: sign in, reach the navigation, page through the images list (cursor paging)', { skip }, async () => {
  // 12 more images (metadata only) so that 5 per page makes pages
  for (let i = 0; i < 12; i++)
    assert.equal((await apiRequest(s, 'POST', '/api/v1/images', { name: `page-${String(i).padStart(2, '0')}`, project: 'beta' })).status, 201);
  const page = await browser.context.newPage();
  try {
    await page.goto(`${s.url}/`);
    await page.getByLabel('API token').waitFor();
    await page.keyboard.press('Tab');
    assert.equal(
      await page.evaluate<string>(`document.activeElement.id`),
      'token',
      `the first Tab reaches the token field, not ${await page.evaluate<string>(`document.activeElement.outerHTML.slice(0, 200)`)}`,
    );
    await page.keyboard.type(s.token);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Images', level: 1 }).waitFor();
    // Tab from the top: the skip link, then the navigation's links
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate<string>(`document.activeElement.textContent`), 'Skip to content');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate<string>(`document.activeElement.textContent`), 'Upload');
    await page.getByLabel('Project').selectOption('beta');
    await page.getByLabel('Sort').selectOption('name:asc');
    await page.getByLabel('Per page').selectOption('10');
    await page.getByLabel('Search by name').focus();
    await page.keyboard.type('page-');
    await page.keyboard.press('Enter');
    const names = () => page.getByRole('table').getByRole('link').allInnerTexts();
    // the unfiltered list shown before already holds page-00: wait for the filtered one itself
    const shows = async (want: string[]) => {
      let got: string[] = [];
      for (let i = 0; i < 100; i++) {
        got = await names();
        if (JSON.stringify(got) === JSON.stringify(want)) return;
        await page.waitForTimeout(100);
      }
      assert.deepEqual(got, want);
    };
    await shows(Array.from({ length: 10 }, (_, i) => `page-${String(i).padStart(2, '0')}`));
    await page.getByRole('button', { name: 'Next page' }).focus();
    await page.keyboard.press('Enter');
    await shows(['page-10', 'page-11']);
    assert.ok(await page.getByRole('button', { name: 'Next page' }).isDisabled(), 'no page after the last');
    await page.getByRole('button', { name: 'Previous page' }).click();
    await page.getByRole('table').getByRole('link', { name: 'page-00' }).waitFor();
  } finally {
    await page.close();
  }
});

test('a slow upload shows progress, speed and time left in the dashboard', { skip }, async () => {
  const page = await browser.context.newPage();
  try {
    await signIn(page, s.token);
    // about 1.5 MB/s up: the 4.3 MiB qcow2 takes a few seconds
    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1.5 * 1024 * 1024 });
    await page.goto(`${s.url}/upload`);
    await page.locator('#upload-protocol', { hasText: /tus|plain/ }).waitFor();
    await page.getByLabel('Project').selectOption('beta');
    await page.locator('.uppy-Dashboard-input').first().setInputFiles(good);
    await page.locator('.uppy-StatusBar-actionBtn--upload').click();
    // Uppy's status bar: bytes done of the total and time left; the page's own line: speed and time left
    const bar = page.locator('.uppy-StatusBar-statusSecondary').filter({ hasText: /[1-9][\d.]* ?[KM]B of [\d.]+ ?MB/ });
    await bar.waitFor({ timeout: 20_000 });
    assert.match(await bar.innerText(), /left/);
    const line = page.locator('.rates li').filter({ hasText: /\/s/ });
    await line.waitFor({ timeout: 20_000 });
    const text = await line.innerText();
    assert.match(text, /guest\.qcow2: [\d.]+ (KiB|MiB) of 4\.31 MiB at [\d.]+ (KiB|MiB)\/s, \d+ s left/, text);
    const speed = Number(/at ([\d.]+) (KiB|MiB)\/s/.exec(text)![1]) * (text.includes('MiB/s') ? 1024 * 1024 : 1024);
    assert.ok(speed > 0.5 * 1024 * 1024 && speed < 4 * 1024 * 1024, `the speed shown (${text}) is near the 1.5 MiB/s the network allows`);
    await screenshot(page, 'upload-progress');
    await page.locator('.results li.ok').waitFor({ timeout: 60_000 });
  } finally {
    await page.close();
  }
});

test('the console is served at its page paths only: API typos stay problem+json 404s', { skip }, async () => {
  const page = await fetch(`${s.url}/images/some-id`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  // every path the server answers with the console is a page the console has (the two lists agree)
  for (const path of CONSOLE_PAGES) {
    if (path === '/signin/callback') continue;
    await admin.goto(`${s.url}${path.replace(':id', uploadedId)}`);
    const h1 = admin.getByRole('heading', { level: 1 });
    await h1.waitFor();
    assert.notEqual(await h1.innerText(), 'Not found', `the console has no page for ${path}`);
  }
  const typo = await fetch(`${s.url}/api/v1/imagez`);
  assert.equal(typo.status, 404);
  assert.match(typo.headers.get('content-type') ?? '', /problem\+json/);
  const elsewhere = await fetch(`${s.url}/no-such-page`);
  assert.equal(elsewhere.status, 404);
  const cfg = (await (await fetch(`${s.url}/api/v1/console`)).json()) as { oidc: unknown };
  assert.deepEqual(cfg.oidc, null, 'no OIDC sign-in configured');
  assert.equal((await fetch(`${s.url}/api/v1/gc`)).status, 401, 'GC check needs credentials');
  const asBob = await fetch(`${s.url}/api/v1/gc`, { headers: { authorization: `Bearer ${bobToken}` } });
  assert.equal(asBob.status, 403, 'GC check is for server admins');
});
