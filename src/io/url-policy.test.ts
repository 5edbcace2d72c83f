import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UrlNotAllowed, UrlPolicy, ipBits, parseCidr } from './url-policy.js';

test('ip parsing handles v4, compressed v6 and embedded v4', () => {
  assert.equal(ipBits('1.2.3.4'), 0x01020304n);
  assert.equal(ipBits('::1'), 1n);
  assert.equal(ipBits('fe80::1'), (0xfe80n << 112n) | 1n);
  assert.equal(ipBits('::ffff:127.0.0.1'), (0xffffn << 32n) | 0x7f000001n);
  assert.throws(() => parseCidr('10.0.0.0/33'), /prefix/);
  assert.throws(() => parseCidr('not-an-ip'), /not an IP/);
});

test('private, loopback, link-local and metadata addresses are refused by default', () => {
  const p = new UrlPolicy();
  for (const ip of ['127.0.0.1', '127.8.9.10', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '224.0.0.1']) {
    assert.throws(() => p.checkAddress(ip, 'h'), UrlNotAllowed, ip);
  }
  for (const ip of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '2606:4700::1111']) assert.doesNotThrow(() => p.checkAddress(ip, 'h'), ip);
});

test('an administrator can allow a host or a range', () => {
  const p = new UrlPolicy({ hosts: ['mirror.internal'], cidrs: ['10.20.0.0/16', '::1/128'] });
  assert.doesNotThrow(() => p.checkAddress('10.0.0.5', 'mirror.internal'));
  assert.doesNotThrow(() => p.checkAddress('10.20.3.4', 'x'));
  assert.throws(() => p.checkAddress('10.21.3.4', 'x'), /imago serve --import-allow x/);
  assert.doesNotThrow(() => p.checkAddress('::1', 'x'));
});

test('only http(s), no credentials, literal addresses checked before connecting', () => {
  const p = new UrlPolicy();
  for (const u of ['ftp://example.com/a.img', 'file:///etc/passwd', 'gopher://x/', 'javascript:alert(1)']) assert.throws(() => p.checkUrl(u), /http and https URLs only/, u);
  assert.throws(() => p.checkUrl('https://user:pw@example.com/a'), /credentials/);
  assert.throws(() => p.checkUrl('http://169.254.169.254/latest/meta-data/'), /link-local or private/);
  assert.throws(() => p.checkUrl('http://[::1]:8080/'), /link-local or private/);
  assert.throws(() => p.checkUrl('not a url'), /not a valid URL/);
  assert.equal(p.checkUrl('https://example.com/disk.qcow2').hostname, 'example.com');
});
