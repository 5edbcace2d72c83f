/**
 * containerDisk layers, read and written. Layers to read are made by the real tools: GNU tar (ustar,
 * gnu and posix formats, long names), Python's tarfile (the writer of ../shared/peers/
 * make-containerdisk.sh, and of hostile entries GNU tar will not write), and byte patches of
 * those. Every accepted layer is read at chunk sizes 1, 17, 512 and 65536. Generated layers are
 * extracted by GNU tar (byte-identical disk, owner 107, mode, mtime), listed by it when 8 GiB and
 * over (a sparse file), and made twice to the same sha256.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeOciLayout } from '../../test/support/containerdisk.js';
import { CHUNK_SIZES } from '../../test/support/stream.js';
import {
  ContainerDiskError,
  ContainerDiskReader,
  artifactManifest,
  containerDiskConfig,
  containerDiskFileName,
  containerDiskLayout,
  containerDiskManifest,
  layoutSegments,
  type ContainerDiskLimits,
} from './container-disk.js';
import { BLOCK, MAX_OCTAL_SIZE, TarStreamParser } from './tar.js';

const work = mkdtempSync(join(tmpdir(), 'imago-cdisk-'));
after(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const dir = () => {
  const d = join(work, `t${n++}`);
  mkdirSync(d);
  return d;
};
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** GNU tar of `entries` (paths relative to `root`), with extra flags. */
function gnuTar(root: string, entries: string[], flags: string[] = []): Buffer {
  return execFileSync('tar', ['-C', root, '--owner=107', '--group=107', '--numeric-owner', '--mtime=@0', ...flags, '-cf', '-', ...entries], {
    maxBuffer: 256 << 20,
  });
}

/** Python tarfile (what make-containerdisk.sh writes with), for entries GNU tar will not write as given. */
function pyTar(
  spec: { name: string; type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'fifo'; data?: string; link?: string; pax?: Record<string, string> }[],
  format = 'PAX_FORMAT',
): Buffer {
  const script = `
import sys, tarfile, io, json, base64
spec = json.loads(sys.stdin.read())
out = tarfile.open(fileobj=sys.stdout.buffer, mode='w|', format=tarfile.${format})
T = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE, 'hardlink': tarfile.LNKTYPE, 'chr': tarfile.CHRTYPE, 'fifo': tarfile.FIFOTYPE}
for e in spec:
    ti = tarfile.TarInfo(e['name']); ti.type = T[e.get('type', 'file')]; ti.uid = ti.gid = 107; ti.mtime = 0
    if e.get('link'): ti.linkname = e['link']
    if e.get('pax'): ti.pax_headers = e['pax']
    data = base64.b64decode(e.get('data', ''))
    if ti.type == tarfile.REGTYPE:
        ti.size = len(data); out.addfile(ti, io.BytesIO(data))
    else:
        out.addfile(ti)
out.close()
`;
  const enc = spec.map((e) => ({ ...e, data: Buffer.from(e.data ?? '', 'latin1').toString('base64') }));
  return execFileSync('/usr/bin/python3', ['-c', script], { input: JSON.stringify(enc), maxBuffer: 64 << 20 });
}

interface ReadResult {
  fileName: string;
  path: string;
  size: number;
  disk: Buffer;
}

/** Reads a layer at one chunk size; returns the disk, or throws the reader's error. */
function readLayer(layer: Uint8Array, chunk: number, limits: Partial<ContainerDiskLimits> = {}): ReadResult {
  const r = new ContainerDiskReader(limits);
  let found: ReadResult | undefined;
  const parts: Buffer[] = [];
  const take = (evs: ReturnType<ContainerDiskReader['push']>) => {
    for (const ev of evs) {
      if (ev.kind === 'disk') found = { ...ev.disk, disk: Buffer.alloc(0) };
      else if (ev.kind === 'data') parts.push(Buffer.from(ev.bytes));
    }
  };
  for (let off = 0; off < layer.length; off += chunk) take(r.push(layer.subarray(off, Math.min(layer.length, off + chunk))));
  take(r.finish());
  assert.ok(found, 'a disk was found');
  found.disk = Buffer.concat(parts);
  assert.equal(found.disk.length, found.size);
  return found;
}

/** Every chunk size gives the same disk (byte-at-a-time only for small layers). */
function readEveryWay(layer: Uint8Array, limits: Partial<ContainerDiskLimits> = {}): ReadResult {
  const first = readLayer(layer, 65536, limits);
  for (const c of CHUNK_SIZES) {
    if (c === 1 && layer.length > 256 * 1024) continue;
    const got = readLayer(layer, c, limits);
    assert.equal(got.fileName, first.fileName, `chunk ${c}`);
    assert.equal(sha(got.disk), sha(first.disk), `chunk ${c}`);
  }
  return first;
}

function refusal(layer: Uint8Array, limits: Partial<ContainerDiskLimits> = {}): ContainerDiskError {
  let err: unknown;
  for (const c of [1, 17, 512, 65536]) {
    if (c === 1 && layer.length > 256 * 1024) continue;
    try {
      readLayer(layer, c, limits);
      assert.fail(`chunk ${c}: accepted`);
    } catch (e) {
      assert.ok(e instanceof ContainerDiskError, `chunk ${c}: ${String(e)}`);
      if (err) assert.equal(e.code, (err as ContainerDiskError).code, `chunk ${c}: same code at every chunk size`);
      err ??= e;
    }
  }
  return err as ContainerDiskError;
}

/** A disk/ directory with files, as a build context would hold it. */
function context(files: Record<string, Buffer | string>): string {
  const d = dir();
  for (const [name, data] of Object.entries(files)) {
    mkdirSync(join(d, name, '..'), { recursive: true });
    writeFileSync(join(d, name), data);
  }
  return d;
}

const DISK = randomBytes(3 * 65536 + 123);

test('GNU tar layers (ustar, gnu, posix; ./ prefix) give the one disk byte for byte, at every chunk size', () => {
  const ctx = context({ 'disk/fedora.qcow2': DISK });
  for (const format of ['ustar', 'gnu', 'posix']) {
    const r = readEveryWay(gnuTar(ctx, ['disk'], [`--format=${format}`]));
    assert.equal(r.fileName, 'fedora.qcow2', format);
    assert.equal(r.path, 'disk/fedora.qcow2');
    assert.equal(sha(r.disk), sha(DISK), format);
  }
  const dotted = readEveryWay(gnuTar(ctx, ['.'], ['--format=posix']));
  assert.equal(dotted.path, './disk/fedora.qcow2');
  assert.equal(sha(dotted.disk), sha(DISK));
});

test('long disk names: GNU tar writes an L record (gnu) or a pax path (posix); both are read', () => {
  const long = `${'a'.repeat(150)}.qcow2`;
  const ctx = context({ [`disk/${long}`]: DISK });
  for (const format of ['gnu', 'posix']) {
    const r = readEveryWay(gnuTar(ctx, ['disk'], [`--format=${format}`]));
    assert.equal(r.fileName, long, format);
  }
});

test("Python tarfile's PAX layer (make-containerdisk.sh's writer) with xattr-like pax records and zero padding to 10 KiB", () => {
  const layer = pyTar([
    { name: 'disk', type: 'dir' },
    { name: 'disk/disk.img', data: DISK.toString('latin1'), pax: { 'SCHILY.xattr.user.x': 'y' } },
  ]);
  assert.equal(layer.length % 10240, 0, 'tarfile pads to a 10 KiB record');
  assert.equal(sha(readEveryWay(layer).disk), sha(DISK));
});

test('a disk of 0 bytes is a disk (ingest refuses it as EMPTY_IMAGE)', () => {
  const r = readEveryWay(gnuTar(context({ 'disk/empty.raw': '' }), ['disk']));
  assert.equal(r.size, 0);
});

// ---- hostile and wrong layers: every refusal names the problem, at every chunk size

test('"../" and absolute paths are refused (UNSAFE_ENTRY), before or after the disk', () => {
  const disk = { name: 'disk/disk.img', data: 'x'.repeat(1000) };
  for (const bad of ['../evil', 'disk/../../etc/passwd', '/etc/cron.d/x', '/disk/disk.img']) {
    for (const spec of [
      [{ name: 'disk', type: 'dir' as const }, { name: bad, data: 'evil' }, disk],
      [disk, { name: bad, data: 'evil' }],
    ]) {
      const e = refusal(pyTar(spec));
      assert.equal(e.code, 'UNSAFE_ENTRY', `${bad}: ${e.message}`);
      assert.match(e.message, /absolute path|".."/);
      assert.ok(e.message.includes(JSON.stringify(bad)), e.message);
      assert.equal(e.isContainerDisk, true);
    }
  }
});

test('links, devices and fifos are refused, naming the entry (GNU tar and Python)', () => {
  const ctx = context({ 'disk/real.img': DISK });
  symlinkSync('/etc/shadow', join(ctx, 'disk', 'disk.img'));
  let e = refusal(gnuTar(ctx, ['disk']));
  assert.equal(e.code, 'UNSAFE_ENTRY');
  assert.match(e.message, /symlink to "\/etc\/shadow"/);
  for (const [type, why] of [
    ['hardlink', /hardlink to "disk\/a.img"/],
    ['chr', /chardev/],
    ['fifo', /fifo/],
  ] as const) {
    e = refusal(
      pyTar([
        { name: 'disk/a.img', data: 'aaaa' },
        { name: 'disk/b.img', type, link: 'disk/a.img' },
      ]),
    );
    assert.equal(e.code, 'UNSAFE_ENTRY', type);
    assert.match(e.message, why);
  }
});

test('two disks are refused (TWO_DISKS) — after the first disk has streamed', () => {
  const layer = gnuTar(context({ 'disk/a.qcow2': DISK, 'disk/b.raw': 'second' }), ['disk/a.qcow2', 'disk/b.raw']);
  const r = new ContainerDiskReader();
  let data = 0;
  assert.throws(
    () => {
      for (let off = 0; off < layer.length; off += 4096)
        for (const ev of r.push(layer.subarray(off, off + 4096))) if (ev.kind === 'data') data += ev.bytes.length;
    },
    (e: unknown) => e instanceof ContainerDiskError && e.code === 'TWO_DISKS' && /"disk\/a.qcow2" and "disk\/b.raw"/.test(e.message),
  );
  // the chunk that holds the second header fails whole: the first disk streamed up to it
  assert.ok(data > DISK.length - 4096, `the first disk streamed before the second was met (${data} bytes)`);
  assert.equal(refusal(layer).code, 'TWO_DISKS');
});

test('no disk: a disk/ directory with nothing in it is NO_DISK; a layer with nothing in disk/ is NOT_A_CONTAINER_DISK (not ours to judge)', () => {
  const empty = dir();
  mkdirSync(join(empty, 'disk'));
  assert.equal(refusal(gnuTar(empty, ['disk'])).code, 'NO_DISK');
  const other = refusal(gnuTar(context({ 'etc/hosts': '127.0.0.1 localhost\n' }), ['etc']));
  assert.equal(other.code, 'NOT_A_CONTAINER_DISK');
  assert.equal(other.isContainerDisk, false);
  // an ordinary layer's symlinks (usrmerge: bin -> usr/bin) do not make it a hostile containerDisk
  const usr = pyTar([
    { name: 'bin', type: 'symlink', link: 'usr/bin' },
    { name: 'usr/bin/true', data: 'ELF' },
  ]);
  assert.equal(refusal(usr).code, 'NOT_A_CONTAINER_DISK');
  // ... but the same entries before a disk/ entry are the containerDisk's, and refused
  const mixed = refusal(
    pyTar([
      { name: 'bin', type: 'symlink', link: 'usr/bin' },
      { name: 'disk/disk.img', data: 'x' },
    ]),
  );
  assert.equal(mixed.code, 'UNSAFE_ENTRY');
  assert.match(mixed.message, /"bin"/);
});

test('files outside disk/ or nested in it, other directories and whiteouts are UNEXPECTED_ENTRY', () => {
  for (const spec of [
    [
      { name: 'disk/disk.img', data: 'x' },
      { name: 'etc/passwd', data: 'root' },
    ],
    [{ name: 'disk/sub/disk.img', data: 'x' }],
    [
      { name: 'disk/disk.img', data: 'x' },
      { name: 'disk/more', type: 'dir' as const },
    ],
    [{ name: 'disk/.wh.disk.img', data: '' }],
    [{ name: 'disk/bad\u202ename.img', data: 'x' }],
  ]) {
    const e = refusal(pyTar(spec));
    assert.equal(e.code, 'UNEXPECTED_ENTRY', e.message);
  }
});

test('truncated layers and sizes beyond the stream are TRUNCATED, naming what is missing', () => {
  const layer = gnuTar(context({ 'disk/disk.img': DISK }), ['disk']);
  const dataAt = 2 * BLOCK; // disk/ header, then the file's header
  for (const cut of [100, BLOCK + 300, dataAt + 5000, dataAt + DISK.length - 1]) {
    const e = refusal(layer.subarray(0, cut));
    assert.equal(e.code, 'TRUNCATED', `cut at ${cut}: ${e.message}`);
  }
  assert.match(refusal(layer.subarray(0, dataAt + 5000)).message, /bytes are missing: its header declares more than the stream holds/);
  // a header that declares more than the archive holds (size patched, checksum fixed)
  const grown = Buffer.from(layer.subarray(0, dataAt + DISK.length + 600));
  writeOctal(grown, BLOCK + 124, 12, DISK.length * 4);
  fixChecksum(grown, BLOCK);
  assert.equal(refusal(grown).code, 'TRUNCATED');
});

test('GNU long names and pax records abused: hidden bytes after a NUL, piles of records, a record with no entry, huge records, global renames, bad lengths', () => {
  const long = `${'n'.repeat(120)}.img`;
  const gnu = Buffer.from(gnuTar(context({ [`disk/${long}`]: 'data' }), ['disk/' + long], ['--format=gnu']));
  assert.equal(gnu.subarray(0, 13).toString('latin1'), '././@LongLink');
  // the L record's name, then a NUL, then another name a different reader might take
  const hidden = Buffer.from(gnu);
  hidden.write('disk/x.img\0../../etc/passwd', BLOCK, 'latin1');
  const e1 = refusal(hidden);
  assert.equal(e1.code, 'MALFORMED_HEADER');
  assert.match(e1.message, /bytes after a NUL/);
  // five L records before one entry
  const L = gnu.subarray(0, 2 * BLOCK);
  assert.equal(refusal(Buffer.concat([L, L, L, L, L, gnu.subarray(2 * BLOCK)])).code, 'OVER_LIMIT');
  // an L record and then the end of the archive
  assert.match(refusal(Buffer.concat([L, Buffer.alloc(1024)])).message, /extension record with no entry after it/);
  // a pax record of 100 KB (the limit is 64 KiB) is refused before it is read
  const huge = refusal(pyTar([{ name: 'disk/disk.img', data: 'x', pax: { comment: 'c'.repeat(100_000) } }]));
  assert.equal(huge.code, 'OVER_LIMIT');
  assert.match(huge.message, /over the 65536-byte limit/);
  // a global header renaming every entry after it
  const g = Buffer.from(pyTar([{ name: 'disk/disk.img', data: 'x', pax: { path: 'disk/other.img' } }]));
  assert.equal(String.fromCharCode(g[156]!), 'x');
  g[156] = 'g'.charCodeAt(0);
  fixChecksum(g, 0);
  assert.match(refusal(g).message, /global header .* sets path/);
  // a pax record whose length does not add up
  const badLen = Buffer.from(pyTar([{ name: 'disk/disk.img', data: 'x', pax: { comment: 'hello' } }]));
  const at = badLen.indexOf(' comment=', BLOCK);
  badLen.write('9', at - 2, 'latin1'); // "NN comment=hello\n" → wrong length
  assert.equal(refusal(badLen).code, 'MALFORMED_HEADER');
  // a pax size that is not a number
  assert.equal(refusal(pyTar([{ name: 'disk/disk.img', data: 'x', pax: { size: '1e3' } }])).code, 'MALFORMED_HEADER');
});

test('GNU sparse entries (GNU tar --sparse, gnu and posix formats) are refused: what Go expands is not what the bytes say', () => {
  const ctx = dir();
  mkdirSync(join(ctx, 'disk'));
  execFileSync('truncate', ['-s', '4M', join(ctx, 'disk', 'sparse.raw')]);
  execFileSync('dd', ['if=/dev/urandom', `of=${join(ctx, 'disk', 'sparse.raw')}`, 'bs=64k', 'count=1', 'seek=20', 'conv=notrunc', 'status=none']);
  const gnu = refusal(gnuTar(ctx, ['disk'], ['--sparse', '--format=gnu']));
  assert.equal(gnu.code, 'UNSAFE_ENTRY');
  assert.match(gnu.message, /tar type "S"/);
  const posix = refusal(gnuTar(ctx, ['disk'], ['--sparse', '--format=posix']));
  assert.equal(posix.code, 'MALFORMED_HEADER');
  assert.match(posix.message, /GNU sparse file/);
});

test('two names for one entry (a GNU long name and a different pax path), and a pax key given twice, are refused', () => {
  const long = `${'n'.repeat(120)}.img`;
  const gnu = gnuTar(context({ [`disk/${long}`]: 'data' }), ['disk/' + long], ['--format=gnu']);
  const pax = pyTar([{ name: 'disk/a.img', data: 'data', pax: { path: 'disk/other.img' } }]);
  // the pax record of `pax`, then the L record and entry of `gnu`
  const both = refusal(Buffer.concat([pax.subarray(0, 2 * BLOCK), gnu]));
  assert.equal(both.code, 'MALFORMED_HEADER');
  assert.match(both.message, /two names/);
  const twice = Buffer.from(pyTar([{ name: 'disk/a.img', data: 'x', pax: { comment: 'aaaa', mtime: '0' } }]));
  const at = twice.indexOf(' mtime=0\n', BLOCK);
  twice.write(' path=b', at, 'latin1');
  const at2 = twice.indexOf(' comment=aaaa\n', BLOCK);
  twice.write(' path=cccc', at2, 'latin1');
  assert.match(refusal(twice).message, /sets "path" twice/);
});

test('bytes after the end-of-archive block, bad checksums and declared sizes over the limit are refused', () => {
  const layer = gnuTar(context({ 'disk/disk.img': DISK }), ['disk']);
  const junk = Buffer.concat([layer, Buffer.from('PK\x03\x04 another archive')]);
  assert.equal(refusal(junk).code, 'TRAILING_DATA');
  const bad = Buffer.from(layer);
  bad[BLOCK + 10] = bad[BLOCK + 10]! ^ 1;
  const e = refusal(bad);
  assert.equal(e.code, 'MALFORMED_HEADER');
  assert.match(e.message, /bad checksum/);
  const big = refusal(layer, { maxDiskBytes: 1000 });
  assert.equal(big.code, 'DISK_TOO_LARGE');
  assert.match(big.message, /declares 196731 bytes, over the 1000-byte limit/);
  // a layer that is not a tar at all (before any disk/ entry): not a containerDisk
  const notTar = refusal(randomBytes(4096));
  assert.equal(notTar.isContainerDisk, false);
});

// ---- writing

test('a generated layer extracts with GNU tar to the same disk, owned 107:107, mode 0440 in a 0555 disk/, mtime 0', () => {
  const disk = randomBytes(5 * 65536 + 77);
  const layout = containerDiskLayout('alma-9.qcow2', disk.length);
  const layer = Buffer.concat([layout.head, disk, layout.tail]);
  assert.equal(layer.length, layout.totalSize);
  assert.equal(layer.length % BLOCK, 0);
  const d = dir();
  writeFileSync(join(d, 'layer.tar'), layer);
  const listing = execFileSync('tar', ['-tvf', join(d, 'layer.tar'), '--numeric-owner', '--utc'], { encoding: 'utf8' });
  assert.match(listing, /^dr-xr-xr-x 107\/107\s+0 1970-01-01 00:00 disk\/\n-r--r----- 107\/107\s+327757 1970-01-01 00:00 disk\/alma-9\.qcow2\n$/);
  mkdirSync(join(d, 'out'));
  execFileSync('tar', ['-xf', join(d, 'layer.tar'), '-C', join(d, 'out')]);
  assert.equal(sha(readFileSync(join(d, 'out', 'disk', 'alma-9.qcow2'))), sha(disk));
  // and our own reader reads it back
  assert.equal(sha(readEveryWay(layer).disk), sha(disk));
});

test('the same disk always makes the same layer bytes and digest; sizes at 512-byte boundaries', () => {
  for (const size of [0, 1, 511, 512, 513, 65536]) {
    const disk = Buffer.alloc(size, 7);
    const a = containerDiskLayout('disk.img', size);
    const b = containerDiskLayout('disk.img', size);
    const la = Buffer.concat([a.head, disk, a.tail]);
    assert.equal(sha(la), sha(Buffer.concat([b.head, disk, b.tail])));
    assert.equal(a.totalSize, 3 * BLOCK + Math.ceil(size / BLOCK) * BLOCK + 2 * BLOCK - BLOCK);
    assert.equal(readLayer(la, 512).size, size);
  }
});

test('a disk of 8 GiB and over gets a pax size record: GNU tar lists it (sparse file), our reader reads its size', () => {
  const size = MAX_OCTAL_SIZE + 12345;
  const layout = containerDiskLayout('big.raw', size);
  const file = join(dir(), 'big.tar');
  const fd = openSync(file, 'w');
  writeSync(fd, layout.head, 0, layout.head.length, 0);
  ftruncateSync(fd, layout.totalSize - layout.tail.length);
  writeSync(fd, layout.tail, 0, layout.tail.length, layout.totalSize - layout.tail.length);
  closeSync(fd);
  const listing = execFileSync('tar', ['-tvf', file, '--numeric-owner'], { encoding: 'utf8' });
  assert.match(listing, new RegExp(`107/107\\s+${size} .* disk/big\\.raw\\n$`));
  const r = new ContainerDiskReader();
  const evs = r.push(layout.head);
  const d = evs.find((e) => e.kind === 'disk');
  assert.ok(d?.kind === 'disk');
  assert.equal(d.disk.size, size);
});

test('layoutSegments: any range of the layer is head bytes, a disk range and tail bytes that concatenate to it', () => {
  const disk = randomBytes(3000);
  const layout = containerDiskLayout('d.qcow2', disk.length);
  const whole = Buffer.concat([layout.head, disk, layout.tail]);
  const rnd = (k: number) => Math.floor(Math.random() * k);
  const ranges = [
    { start: 0, end: whole.length - 1 },
    { start: 0, end: 0 },
    { start: layout.head.length, end: layout.head.length + disk.length - 1 },
    { start: whole.length - 1, end: whole.length - 1 },
  ];
  for (let i = 0; i < 200; i++) {
    const s = rnd(whole.length);
    ranges.push({ start: s, end: s + rnd(whole.length - s) });
  }
  for (const range of ranges) {
    const got = Buffer.concat(layoutSegments(layout, range).map((seg) => (seg.kind === 'bytes' ? seg.bytes : disk.subarray(seg.start, seg.end + 1))));
    assert.deepEqual(got, whole.subarray(range.start, range.end + 1), JSON.stringify(range));
  }
  assert.throws(() => layoutSegments(layout, { start: 0, end: whole.length }), RangeError);
});

test('containerDiskFileName keeps a safe file name and falls back to disk.qcow2 / disk.img', () => {
  assert.equal(containerDiskFileName('alma-9.qcow2', 'qcow2'), 'alma-9.qcow2');
  assert.equal(containerDiskFileName('some/dir/x.img', 'raw'), 'x.img');
  assert.equal(containerDiskFileName('../../etc/passwd', 'raw'), 'passwd');
  assert.equal(containerDiskFileName('bad name.qcow2', 'qcow2'), 'disk.qcow2');
  assert.equal(containerDiskFileName(undefined, 'raw'), 'disk.img');
  assert.equal(containerDiskFileName('.hidden', 'raw'), 'disk.img');
  assert.equal(containerDiskFileName('x'.repeat(200), 'qcow2'), 'disk.qcow2');
  assert.throws(() => containerDiskLayout('../x', 1), RangeError);
});

test('config and manifests are deterministic JSON; skopeo reads a layout made of them (oracle)', () => {
  const disk = randomBytes(70000);
  const layout = containerDiskLayout('disk.qcow2', disk.length);
  const layer = Buffer.concat([layout.head, disk, layout.tail]);
  const layerDigest = `sha256:${sha(layer)}`;
  const config = containerDiskConfig(layerDigest, 'aarch64');
  assert.deepEqual(JSON.parse(Buffer.from(config.bytes).toString()), {
    architecture: 'arm64',
    os: 'linux',
    variant: 'v8',
    config: {},
    rootfs: { type: 'layers', diff_ids: [layerDigest] },
  });
  const m = containerDiskManifest(config, { digest: layerDigest, size: layer.length }, { 'org.openstack.glance.os_distro': 'alma' });
  assert.equal(
    m.digest,
    containerDiskManifest(
      containerDiskConfig(layerDigest, 'aarch64'),
      { digest: layerDigest, size: layer.length },
      { 'org.openstack.glance.os_distro': 'alma' },
    ).digest,
  );
  const oci = dir();
  writeOciLayout(oci, m, [layer, config.bytes]);
  const info = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${oci}:v1`], { encoding: 'utf8' })) as Record<string, unknown>;
  assert.equal(info.Architecture, 'arm64');
  assert.deepEqual(info.Layers, [layerDigest]);
  // skopeo copy verifies every blob's digest and size as it reads it
  execFileSync('skopeo', ['copy', '--quiet', `oci:${oci}:v1`, `dir:${join(oci, 'copy')}`]);
  assert.equal(sha(readFileSync(join(oci, 'copy', sha(layer)))), sha(layer));

  const art = artifactManifest({ digest: `sha256:${sha(disk)}`, size: disk.length, fileName: 'alma-9.qcow2' }, { 'eu.egi.cloud.tag': '2025-06-10-7b98c834' });
  const parsed = JSON.parse(Buffer.from(art.bytes).toString()) as {
    artifactType: string;
    config: { mediaType: string; size: number };
    layers: { annotations: Record<string, string> }[];
  };
  assert.equal(parsed.artifactType, 'application/vnd.unknown.artifact.v1');
  assert.equal(parsed.config.mediaType, 'application/vnd.oci.empty.v1+json');
  assert.deepEqual(parsed.layers[0]!.annotations, { 'eu.egi.cloud.tag': '2025-06-10-7b98c834', 'org.opencontainers.image.title': 'alma-9.qcow2' });
});

test('TarStreamParser holds one block at most between pushes, whatever the archive size', () => {
  const layer = gnuTar(context({ 'disk/disk.img': randomBytes(2 << 20) }), ['disk']);
  const p = new TarStreamParser();
  let data = 0;
  for (let off = 0; off < layer.length; off += 17) for (const ev of p.push(layer.subarray(off, off + 17))) if (ev.kind === 'data') data += ev.bytes.length;
  p.finish();
  assert.equal(data, 2 << 20);
  assert.ok((p as unknown as { held: Uint8Array }).held.length <= 64 * 1024);
});

function writeOctal(b: Buffer, at: number, width: number, v: number): void {
  b.write(v.toString(8).padStart(width - 1, '0') + '\0', at, 'latin1');
}

function fixChecksum(b: Buffer, at: number): void {
  b.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = at; i < at + BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', at + 148, 'latin1');
}

test('firstEntryDecides: an entry outside disk/ before any in it ends the read at once (NOT_A_CONTAINER_DISK, not a verdict); a layer that begins with disk/ reads as usual', () => {
  const big = 'x'.repeat(64 * 1024);
  const plain = pyTar([
    { name: 'etc/hosts', data: '127.0.0.1 localhost\n' },
    { name: 'usr/lib/big', data: big },
  ]);
  const r = new ContainerDiskReader({}, { firstEntryDecides: true });
  // the first header alone decides: the rest of the layer is never needed
  assert.throws(
    () => r.push(plain.subarray(0, BLOCK)),
    (e: unknown) => e instanceof ContainerDiskError && e.code === 'NOT_A_CONTAINER_DISK' && !e.isContainerDisk && /etc\/hosts/.test(e.message),
  );
  // the root directory may come first; disk/ then decides as without the option
  const layer = pyTar([
    { name: '.', type: 'dir' },
    { name: 'disk', type: 'dir' },
    { name: 'disk/disk.img', data: 'disk bytes' },
  ]);
  const early = new ContainerDiskReader({}, { firstEntryDecides: true });
  const events = [...early.push(layer), ...early.finish()];
  assert.deepEqual(
    events.filter((e) => e.kind === 'disk').map((e) => e.kind === 'disk' && e.disk.fileName),
    ['disk.img'],
  );
  // without the option an ordinary layer is read to its end before it is called not a containerDisk
  assert.equal(refusal(plain).code, 'NOT_A_CONTAINER_DISK');
});
