/**
 * Glance's way of declaring an OVA (issue 18, item 10): disk_format=vmdk, container_format=ova.
 * The container claim is checked against the bytes (an OVA), the disk claim against the disks
 * inside it — in the engine, in `imago inspect --container-format`, and on upload.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { inspectFile } from '../src/inspect/inspect-file.js';
import { cached, fixturePath, patternedRaw, qemuConvert } from './support/qemu.js';
import { apiRequest, startTestServer, type TestServer } from './support/server.js';

const exec = promisify(execFile);
const BIN = join(import.meta.dirname, '..', 'bin', 'imago.js');

async function vmdkDisk(): Promise<string> {
  return qemuConvert('oc-disk.vmdk', await patternedRaw('oc-src-2m.raw', 2 << 20), 'vmdk', ['subformat=streamOptimized']);
}

/** An OVA made with tar: an OVF naming one streamOptimized vmdk made by qemu-img. */
async function ova(): Promise<string> {
  return cached('oc-vm.ova', async (tmp) => {
    const dir = fixturePath('oc-vm-dir');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    copyFileSync(await vmdkDisk(), join(dir, 'disk1.vmdk'));
    writeFileSync(
      join(dir, 'vm.ovf'),
      `<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">\n` +
        `<References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>\n` +
        `<DiskSection><Info>disks</Info><Disk ovf:diskId="d1" ovf:fileRef="file1" ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>\n</Envelope>\n`,
    );
    execFileSync('tar', ['--format=ustar', '-cf', tmp, '-C', dir, 'vm.ovf', 'disk1.vmdk']);
  });
}

const mismatch = (r: { findings: { code: string; message: string }[] }) => r.findings.find((f) => f.code === 'FORMAT_MISMATCH');

test('engine: vmdk + ova on an OVA holding a vmdk passes; vmdk alone on an OVA is still refused', async () => {
  const r = await inspectFile(await ova(), { claimedFormat: 'vmdk', claimedContainerFormat: 'ova' });
  assert.equal(r.verdict, 'safe', JSON.stringify(r.findings));
  assert.equal(r.claimedContainerFormat, 'ova');
  const bare = await inspectFile(await ova(), { claimedFormat: 'vmdk' });
  assert.equal(bare.verdict, 'refused');
  assert.ok(mismatch(bare));
});

test('engine: vmdk + ova on a plain vmdk is refused (container mismatch)', async () => {
  const r = await inspectFile(await vmdkDisk(), { claimedFormat: 'vmdk', claimedContainerFormat: 'ova' });
  assert.equal(r.verdict, 'refused');
  assert.match(mismatch(r)!.message, /declared as an OVA .* its bytes are vmdk/);
});

test('engine: qcow2 + ova on an OVA holding a vmdk is refused, naming the inner disk', async () => {
  const r = await inspectFile(await ova(), { claimedFormat: 'qcow2', claimedContainerFormat: 'ova' });
  assert.equal(r.verdict, 'refused');
  assert.match(mismatch(r)!.message, /declared to hold qcow2 disks but "disk1\.vmdk" is vmdk/);
});

function imago(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('CLI: imago inspect --claimed-format vmdk --container-format ova', async () => {
  const file = await ova();
  const ok = imago('inspect', '--json', '--claimed-format', 'vmdk', '--container-format', 'ova', file);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.equal(JSON.parse(ok.stdout).verdict, 'safe');
  const plain = imago('inspect', '--json', '--claimed-format', 'vmdk', '--container-format', 'ova', await vmdkDisk());
  assert.equal(plain.code, 1, plain.stdout + plain.stderr);
  assert.ok(JSON.parse(plain.stdout).findings.some((f: { code: string }) => f.code === 'FORMAT_MISMATCH'));
  const wrong = imago('inspect', '--json', '--claimed-format', 'qcow2', '--container-format', 'ova', file);
  assert.equal(wrong.code, 1, wrong.stdout + wrong.stderr);
  const bad = imago('inspect', '--container-format', 'zip', file);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown --container-format "zip"; use bare or ova/);
});

describe('service: an upload declared disk_format=vmdk, container_format=ova', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s?.stop();
  });

  async function upload(body: Record<string, string>, file: string) {
    const img = (await apiRequest(s, 'POST', '/api/v1/images', { name: 'appliance', ...body })).json!;
    const { stdout } = await exec('curl', [
      '-sS',
      '-T',
      file,
      '-H',
      'content-type: application/octet-stream',
      '-H',
      `authorization: Bearer ${s.token}`,
      '-w',
      '\n%{http_code}',
      `${s.url}/api/v1/images/${img.id}/file`,
    ]);
    const nl = stdout.lastIndexOf('\n');
    return { status: Number(stdout.slice(nl + 1)), json: JSON.parse(stdout.slice(0, nl)) as Record<string, any>, id: img.id as string };
  }

  test('an OVA holding a vmdk becomes ready; a qcow2 claim or a plain vmdk is refused', async () => {
    const good = await upload({ diskFormat: 'vmdk', containerFormat: 'ova' }, await ova());
    assert.equal(good.status, 200, JSON.stringify(good.json));
    assert.equal(good.json.state, 'ready');
    assert.equal(good.json.containerFormat, 'ova');
    const wrongDisk = await upload({ diskFormat: 'qcow2', containerFormat: 'ova' }, await ova());
    assert.equal(wrongDisk.status, 422, JSON.stringify(wrongDisk.json));
    assert.match(JSON.stringify(wrongDisk.json), /FORMAT_MISMATCH/);
    const notOva = await upload({ diskFormat: 'vmdk', containerFormat: 'ova' }, await vmdkDisk());
    assert.equal(notOva.status, 422, JSON.stringify(notOva.json));
    assert.match(JSON.stringify(notOva.json), /FORMAT_MISMATCH/);
  });
});
