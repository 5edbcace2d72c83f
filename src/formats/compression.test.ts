import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { detectCompression } from './compression.js';

const payload = Buffer.from('imago '.repeat(1000));
const tools: Array<[string, string[], string]> = [
  ['gzip', ['-c'], 'gzip'],
  ['xz', ['-c'], 'xz'],
  ['zstd', ['-q', '-c'], 'zstd'],
  ['bzip2', ['-c'], 'bzip2'],
];

for (const [cmd, args, expected] of tools) {
  test(`detects ${expected} made by the real ${cmd}`, () => {
    const out = execFileSync(cmd, args, { input: payload });
    assert.equal(detectCompression(out.subarray(0, 10)), expected);
  });
}

test('zstd skippable frame is recognised', () => {
  assert.equal(detectCompression(new Uint8Array([0x5e, 0x2a, 0x4d, 0x18, 0, 0, 0, 0])), 'zstd');
});

test('near misses are not compression', () => {
  assert.equal(detectCompression(new Uint8Array([0x1f, 0x8b, 0x07])), undefined); // gzip with a non-deflate method
  assert.equal(detectCompression(Buffer.from('BZh0xxxxxxx')), undefined);
  assert.equal(detectCompression(Buffer.from('BZh9notpi!!')), undefined);
  assert.equal(detectCompression(Buffer.from('QFI\xfb', 'latin1')), undefined);
  assert.equal(detectCompression(new Uint8Array(0)), undefined);
});
