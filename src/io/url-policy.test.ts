import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cidr, UrlNotAllowed, UrlPolicy, parseIp } from './url-policy.js';

const ip = (s: string) => parseIp(s)!;

test('addresses parse to bits: v4, compressed v6, embedded v4, zone ids; junk is undefined', () => {
  assert.deepEqual(parseIp('1.2.3.4'), { version: 4, bits: 0x01020304n });
  assert.deepEqual(parseIp('::1'), { version: 6, bits: 1n });
  assert.deepEqual(parseIp('::'), { version: 6, bits: 0n });
  assert.equal(ip('fe80::1%eth0').bits, (0xfe80n << 112n) | 1n);
  assert.equal(ip('::ffff:127.0.0.1').bits, ip('::ffff:7f00:1').bits);
  assert.equal(ip('::ffff:127.0.0.1').bits, (0xffffn << 32n) | 0x7f000001n);
  assert.equal(ip('1:2:3:4:5:6:7:8').bits, 0x0001_0002_0003_0004_0005_0006_0007_0008n);
  assert.equal(ip('1::8').bits, (1n << 112n) | 8n);
  for (const bad of ['', 'localhost', '1.2.3', '1.2.3.256', '01.2.3.4', '1:2:3:4:5:6:7:8:9', ':::', 'g::1']) assert.equal(parseIp(bad), undefined, bad);
});

test('CIDR matching at the range boundaries, v4 and v6', () => {
  const c = (s: string) => Cidr.parse(s);
  assert.ok(c('172.16.0.0/12').contains(ip('172.16.0.0')));
  assert.ok(c('172.16.0.0/12').contains(ip('172.31.255.255')));
  assert.ok(!c('172.16.0.0/12').contains(ip('172.15.255.255')));
  assert.ok(!c('172.16.0.0/12').contains(ip('172.32.0.0')));
  assert.ok(c('0.0.0.0/0').contains(ip('255.255.255.255')));
  assert.ok(c('10.1.2.3').contains(ip('10.1.2.3')));
  assert.ok(!c('10.1.2.3').contains(ip('10.1.2.4')));
  assert.ok(c('fe80::/10').contains(ip('febf:ffff::1')));
  assert.ok(!c('fe80::/10').contains(ip('fec0::1')));
  assert.ok(c('2001:db8::/32').contains(ip('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff')));
  assert.ok(!c('2001:db8::/32').contains(ip('2001:db9::')));
  assert.ok(c('::/0').contains(ip('ffff::1')));
  assert.ok(!c('::/0').contains(ip('1.2.3.4')), 'a v6 range never holds a v4 address');
  assert.ok(!c('0.0.0.0/0').contains(ip('::1')), 'a v4 range never holds a v6 address');
  assert.throws(() => c('10.0.0.0/33'), /invalid prefix length; use \/0 to \/32/);
  assert.throws(() => c('::/129'), /invalid prefix length; use \/0 to \/128/);
  assert.throws(() => c('10.0.0.0/8.5'), /invalid prefix/);
  assert.throws(() => c('10.0.0.0/'), /invalid prefix/);
  assert.throws(() => c('10.0.0.0/8/8'), /not an IP address or CIDR range/);
  assert.throws(() => c('not-an-ip'), /not an IP address or CIDR range/);
  assert.throws(() => c('10.1.2.3/8'), /bits set past its \/8 prefix; write the network address \(10\.0\.0\.0\/8\)/);
  assert.throws(() => c('fe80::1/10'), /\(fe80::\/10\)/);
});

test('denied by default: loopback, link-local, private, CGNAT, unspecified, multicast, broadcast, reserved, mapped forms', () => {
  const p = new UrlPolicy();
  const denied: Record<string, RegExp> = {
    '127.0.0.1': /loopback range 127\.0\.0\.0\/8/,
    '127.255.255.254': /loopback/,
    '::1': /loopback range ::1\/128/,
    '169.254.169.254': /link-local .*169\.254\.0\.0\/16/,
    'fe80::1': /link-local range fe80::\/10/,
    '10.0.0.1': /private range 10\.0\.0\.0\/8/,
    '172.16.0.1': /private/,
    '172.31.255.255': /private/,
    '192.168.1.1': /private/,
    'fd00::1': /private \(unique local\) range fc00::\/7/,
    'fc00::1': /unique local/,
    '100.64.0.1': /carrier-grade NAT/,
    '100.127.255.255': /carrier-grade NAT/,
    '0.0.0.0': /unspecified/,
    '::': /unspecified range ::\/128/,
    '224.0.0.1': /multicast/,
    'ff02::1': /multicast/,
    '255.255.255.255': /broadcast/,
    '240.0.0.1': /reserved/,
    '192.0.2.1': /documentation/,
    '198.18.0.1': /benchmarking/,
    '2001:db8::1': /documentation/,
    '2002:7f00:1::1': /6to4/,
    '2001::1': /Teredo/,
    '::127.0.0.1': /IPv4-compatible/,
    '::ffff:127.0.0.1': /IPv4-mapped form of 127\.0\.0\.1, and that is in the loopback range/,
    '::ffff:7f00:1': /IPv4-mapped form of 127\.0\.0\.1/,
    '::ffff:169.254.169.254': /IPv4-mapped form of 169\.254\.169\.254, and that is in the link-local/,
    '::ffff:10.0.0.1': /private/,
    '64:ff9b::a00:1': /NAT64 form of 10\.0\.0\.1/,
    '4000::1': /outside global unicast 2000::\/3/,
  };
  for (const [addr, why] of Object.entries(denied)) {
    const e = (() => {
      try {
        p.checkAddress(addr);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    assert.ok(e instanceof UrlNotAllowed, `${addr} should be refused`);
    assert.equal(e.reason, 'address');
    assert.match(e.message, why, addr);
    assert.match(e.message, new RegExp(`--import-allow ${addr.replace(/\./g, '\\.')} `), `${addr}: says how an admin allows it`);
  }
  for (const addr of [
    '8.8.8.8',
    '1.1.1.1',
    '172.32.0.1',
    '172.15.255.255',
    '100.63.255.255',
    '100.128.0.0',
    '169.253.255.255',
    '2606:4700:4700::1111',
    '2a00:1450::1',
    '::ffff:8.8.8.8',
    '64:ff9b::808:808',
  ]) {
    assert.doesNotThrow(() => p.checkAddress(addr), addr);
  }
  assert.throws(() => p.checkAddress('not-an-address', 'example.com'), /example\.com resolved to "not-an-address", which is not an IP address/);
});

test('an administrator can allow a host name or a range; nothing else opens up', () => {
  const p = new UrlPolicy({ allowHosts: ['Mirror.Internal'], allowCidrs: ['10.20.0.0/16', '127.0.0.1', 'fd00:1::/64'] });
  assert.doesNotThrow(() => p.checkAddress('10.0.0.5', 'mirror.internal'));
  assert.doesNotThrow(() => p.checkAddress('10.0.0.5', 'MIRROR.internal.'));
  assert.doesNotThrow(() => p.checkAddress('10.20.3.4', 'x.example'));
  assert.doesNotThrow(() => p.checkAddress('127.0.0.1'));
  assert.doesNotThrow(() => p.checkAddress('::ffff:127.0.0.1'), 'the mapped form of an allowed v4 address goes to that address');
  assert.doesNotThrow(() => p.checkAddress('fd00:1::9'));
  assert.throws(() => p.checkAddress('127.0.0.2'), UrlNotAllowed);
  assert.throws(() => p.checkAddress('::1'), UrlNotAllowed);
  assert.throws(() => p.checkAddress('fd00:2::9'), UrlNotAllowed);
  assert.throws(
    () => p.checkAddress('10.21.3.4', 'x.example'),
    /^UrlNotAllowed: refused x\.example: it resolves to 10\.21\.3\.4, in the private range 10\.0\.0\.0\/8; .* --import-allow x\.example \(or the whole range with --import-allow 10\.0\.0\.0\/8/,
  );
  // the shape config.importAllow has
  assert.doesNotThrow(() => new UrlPolicy({ hosts: ['a.b'], cidrs: ['10.0.0.0/8'] }).checkAddress('10.1.1.1', 'x'));
  assert.throws(() => new UrlPolicy({ allowCidrs: ['10.0.0.0/40'] }), /invalid prefix length/);
});

test('checkUrl: http(s) only, no userinfo, literal addresses in any spelling checked before connecting', () => {
  const p = new UrlPolicy();
  for (const u of ['ftp://example.com/a.img', 'file:///etc/passwd', 'gopher://example.com:70/_', 'javascript:alert(1)', 'data:,x', 'ws://example.com/']) {
    assert.throws(
      () => p.checkUrl(u),
      (e: unknown) => e instanceof UrlNotAllowed && e.reason === 'scheme' && /http:\/\/ and https:\/\/ URLs only/.test(e.message),
      u,
    );
  }
  for (const u of ['https://user:pw@example.com/a', 'https://user@example.com/a', 'http://:pw@example.com/']) {
    assert.throws(
      () => p.checkUrl(u),
      (e: unknown) => e instanceof UrlNotAllowed && e.reason === 'credentials' && /pre-signed URL/.test(e.message),
      u,
    );
  }
  for (const u of [
    'http://169.254.169.254/latest/meta-data/',
    'http://[::1]:8080/',
    'http://[::ffff:127.0.0.1]/',
    'http://2130706433/', // 127.0.0.1 as one number
    'http://0x7f.1/',
    'http://0177.0.0.1/',
    'http://10.0.0.1/',
    'HTTP://127.1/',
    'http://0/',
  ]) {
    assert.throws(
      () => p.checkUrl(u),
      (e: unknown) => e instanceof UrlNotAllowed && e.reason === 'address',
      u,
    );
  }
  assert.throws(
    () => p.checkUrl('not a url'),
    (e: unknown) => e instanceof UrlNotAllowed && e.reason === 'invalid-url',
  );
  assert.equal(p.checkUrl('https://example.com/disk.qcow2?sig=1').hostname, 'example.com');
  assert.equal(p.checkUrl('http://[2606:4700::1111]/x').hostname, '[2606:4700::1111]');
  assert.equal(new UrlPolicy({ allowCidrs: ['127.0.0.0/8'] }).checkUrl('http://127.0.0.1:9/').port, '9');
});
