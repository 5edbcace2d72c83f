import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { createDecoder, decoderCommand } from './decompress.js';

async function decode(wrapper: 'xz' | 'bzip2', input: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  const decoder = createDecoder(wrapper);
  Readable.from([input]).pipe(decoder);
  for await (const c of decoder) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** 3 MiB: random blocks between runs of text, so a bzip2 stream has several 900 kB blocks. */
function sample(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 12; i++) parts.push(randomBytes(128 << 10), Buffer.from(`line ${i} of a guest's /etc/fstab\n`.repeat(4096)));
  return Buffer.concat(parts);
}

test('bzip2 is decoded by lbzip2 on every core when it is installed (bzip2 otherwise), concatenated streams included', async () => {
  const installed = spawnSync('lbzip2', ['--version'], { stdio: 'ignore' }).error === undefined;
  assert.equal(decoderCommand('bzip2'), installed ? 'lbzip2' : 'bzip2');
  const a = sample();
  const b = sample();
  const both = Buffer.concat([
    execFileSync('bzip2', ['-c'], { input: a, maxBuffer: 64 << 20 }),
    execFileSync('bzip2', ['-c'], { input: b, maxBuffer: 64 << 20 }),
  ]);
  assert.ok((await decode('bzip2', both)).equals(Buffer.concat([a, b])));
});

test('xz: a multi-block stream (xz -T2) and a single-block one decode to the same bytes', async () => {
  assert.equal(decoderCommand('xz'), 'xz');
  const data = Buffer.concat([sample(), sample()]);
  for (const args of [
    ['-c', '-T2', '--block-size=1MiB'],
    ['-c', '-T1'],
  ]) {
    const packed = execFileSync('xz', args, { input: data, maxBuffer: 64 << 20 });
    assert.ok((await decode('xz', packed)).equals(data), args.join(' '));
  }
});
