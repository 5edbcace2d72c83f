import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferSource, FormatError, readExact } from './byte-source.js';
import { FINDING_CODES } from './findings.js';
import { describeFormat, type FormatDescriptor } from './format.js';
import { inspectSource, knownClaimedFormats } from './inspect-source.js';
import { rawFormat } from './raw.js';

// Synthetic descriptors: they let the engine's own rules be tested apart from any real format.
function magicFormat(name: 'qcow2' | 'vmdk', magic: string, extra: Partial<FormatDescriptor> = {}): FormatDescriptor {
  return describeFormat({
    name,
    description: `synthetic ${name}`,
    async probe(src) {
      const b = await src.read(0, magic.length);
      return Buffer.from(b).toString('latin1') === magic;
    },
    async inspect() {
      return { virtualSize: 1024n, details: { synthetic: true }, findings: [] };
    },
    checks: [],
    ...extra,
  });
}

const bytes = (s: string, size = 4096) => {
  const b = new Uint8Array(size);
  b.set(Buffer.from(s, 'latin1'));
  return b;
};

test('a plain buffer with no signature is raw, safe, virtual size = size', async () => {
  const r = await inspectSource(new BufferSource(bytes('hello')), { formats: [rawFormat] });
  assert.equal(r.format, 'raw');
  assert.equal(r.virtualSize, 4096n);
  assert.equal(r.verdict, 'safe');
  assert.deepEqual(r.findings, []);
});

test('two matching probes are a polyglot refusal, never "first wins"', async () => {
  const formats = [magicFormat('qcow2', 'AB'), magicFormat('vmdk', 'A'), rawFormat];
  const r = await inspectSource(new BufferSource(bytes('ABC')), { formats });
  assert.equal(r.verdict, 'refused');
  assert.deepEqual(r.alsoMatched, ['vmdk']);
  assert.ok(r.findings.some((f) => f.code === 'POLYGLOT' && /qcow2, vmdk/.test(f.message)));
  const clean = await inspectSource(new BufferSource(bytes('AX')), { formats });
  assert.equal(clean.format, 'vmdk');
  assert.ok(!clean.findings.some((f) => f.code === 'POLYGLOT'));
});

test('a probe that throws fails closed', async () => {
  const formats = [
    magicFormat('qcow2', 'Q', {
      async probe() {
        throw new TypeError('boom');
      },
    }),
    rawFormat,
  ];
  const r = await inspectSource(new BufferSource(bytes('Q')), { formats });
  assert.equal(r.verdict, 'refused');
  assert.ok(r.findings.some((f) => f.code === 'CHECK_FAILED' && /boom/.test(f.message)));
});

test('an inspect that throws a plain error fails closed; a FormatError maps to its code', async () => {
  const throwing = magicFormat('qcow2', 'Q', {
    async inspect() {
      throw new RangeError('unexpected');
    },
  });
  const r1 = await inspectSource(new BufferSource(bytes('Q')), { formats: [throwing, rawFormat] });
  assert.equal(r1.verdict, 'refused');
  assert.ok(r1.findings.some((f) => f.code === 'CHECK_FAILED'));
  const pastEnd = magicFormat('qcow2', 'Q', {
    async inspect(src) {
      await readExact(src, 1 << 20, 16, 'L1 table');
      return { details: {}, findings: [] };
    },
  });
  const r2 = await inspectSource(new BufferSource(bytes('Q')), { formats: [pastEnd, rawFormat] });
  assert.equal(r2.verdict, 'refused');
  assert.ok(r2.findings.some((f) => f.code === 'OFFSET_PAST_END' && /L1 table/.test(f.message)));
  const malformed = magicFormat('qcow2', 'Q', {
    async inspect() {
      throw new FormatError('cluster_bits 40 is out of range', 'MALFORMED_HEADER');
    },
  });
  const r3 = await inspectSource(new BufferSource(bytes('Q')), { formats: [malformed, rawFormat] });
  assert.ok(r3.findings.some((f) => f.code === 'MALFORMED_HEADER' && /cluster_bits/.test(f.message)));
});

test('a safety rule that throws counts as a violation', async () => {
  const f = magicFormat('qcow2', 'Q', {
    checks: [
      {
        code: 'BACKING_FILE',
        description: 'throws',
        run() {
          throw new Error('rule exploded');
        },
      },
    ],
  });
  const r = await inspectSource(new BufferSource(bytes('Q')), { formats: [f, rawFormat] });
  assert.equal(r.verdict, 'refused');
  assert.ok(r.findings.some((x) => x.code === 'CHECK_FAILED' && /rule exploded/.test(x.message)));
});

test('claimed format must match the detected one', async () => {
  const formats = [magicFormat('qcow2', 'QFI'), rawFormat];
  const qcow = new BufferSource(bytes('QFI'));
  const lie = await inspectSource(qcow, { formats, claimedFormat: 'raw' });
  assert.equal(lie.verdict, 'refused');
  assert.ok(lie.findings.some((f) => f.code === 'FORMAT_MISMATCH' && /declared as raw but its bytes are qcow2/.test(f.message)));
  const truth = await inspectSource(qcow, { formats, claimedFormat: 'qcow2' });
  assert.equal(truth.verdict, 'safe');
  const unknown = await inspectSource(qcow, { formats, claimedFormat: 'floppy' });
  assert.ok(unknown.findings.some((f) => f.code === 'FORMAT_MISMATCH' && /not one we know/.test(f.message)));
  const rawClaim = await inspectSource(new BufferSource(bytes('plain')), { formats, claimedFormat: 'raw' });
  assert.equal(rawClaim.verdict, 'safe');
});

test('virtual size over the configured limit is refused; at the limit is not', async () => {
  const formats = [magicFormat('qcow2', 'Q'), rawFormat];
  const over = await inspectSource(new BufferSource(bytes('Q')), { formats, limits: { maxVirtualSize: 1023n } });
  assert.ok(over.findings.some((f) => f.code === 'VIRTUAL_SIZE_LIMIT'));
  assert.equal(over.verdict, 'refused');
  const at = await inspectSource(new BufferSource(bytes('Q')), { formats, limits: { maxVirtualSize: 1024n } });
  assert.ok(!at.findings.some((f) => f.code === 'VIRTUAL_SIZE_LIMIT'));
  assert.equal(at.verdict, 'safe');
});

test('finding codes are unique', () => {
  assert.equal(new Set(FINDING_CODES).size, FINDING_CODES.length);
});

test('claimable names: every format by its name, plus the Glance, qemu and OpenNebula aliases', () => {
  const expected = [
    'raw',
    'gpt',
    'aki',
    'ari',
    'ami',
    'img',
    'iso',
    'qcow2',
    'qcow',
    'qed',
    'vmdk',
    'vdi',
    'vhd',
    'vpc',
    'vhdx',
    'luks',
    'ova',
    'ploop',
    'parallels',
  ];
  assert.deepEqual([...knownClaimedFormats()].sort(), expected.sort());
});
