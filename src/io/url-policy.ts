/**
 * Which URLs an import may fetch. http and https only; no credentials in the URL; addresses in
 * loopback, link-local (cloud metadata at 169.254.169.254), private, CGNAT, multicast, reserved
 * and unspecified ranges are refused unless an administrator allows the host name or a CIDR
 * range. The check runs on every address a name resolves to, at every connect (redirects
 * included), on the address actually connected to — no DNS-rebinding window.
 */
import { isIP } from 'node:net';

export class UrlNotAllowed extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'UrlNotAllowed';
  }
}

interface Cidr {
  v: 4 | 6;
  bits: bigint;
  prefix: number;
}

const DENIED_V4 = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '240.0.0.0/4',
  '255.255.255.255/32',
];
const DENIED_V6 = ['::/128', '::1/128', '::ffff:0:0/96', '64:ff9b::/96', '100::/64', '2001:db8::/32', 'fc00::/7', 'fe80::/10', 'ff00::/8'];

export function parseCidr(s: string): Cidr {
  const [addr, p] = s.split('/');
  const v = isIP(addr ?? '');
  if (v === 0) throw new Error(`"${s}" is not an IP address or CIDR range`);
  const max = v === 4 ? 32 : 128;
  const prefix = p === undefined ? max : Number(p);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`"${s}" has an invalid prefix length`);
  return { v: v as 4 | 6, bits: ipBits(addr!), prefix };
}

export function ipBits(ip: string): bigint {
  if (isIP(ip) === 4) return ip.split('.').reduce((n, o) => (n << 8n) | BigInt(Number(o)), 0n);
  let s = ip.toLowerCase();
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // embedded IPv4 (::ffff:1.2.3.4)
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = ipBits(v4[1]!);
    s = `${s.slice(0, -v4[1]!.length)}${(b >> 16n).toString(16)}:${(b & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

function inCidr(ip: string, c: Cidr): boolean {
  const v = isIP(ip);
  if (v !== c.v) return false;
  const width = v === 4 ? 32n : 128n;
  const shift = width - BigInt(c.prefix);
  return ipBits(ip) >> shift === c.bits >> shift;
}

export class UrlPolicy {
  private readonly denied: Cidr[];
  private readonly allowedCidrs: Cidr[];
  private readonly allowedHosts: Set<string>;

  constructor(allow: { hosts?: string[]; cidrs?: string[] } = {}) {
    this.denied = [...DENIED_V4, ...DENIED_V6].map(parseCidr);
    this.allowedCidrs = (allow.cidrs ?? []).map(parseCidr);
    this.allowedHosts = new Set((allow.hosts ?? []).map((h) => h.toLowerCase()));
  }

  /** Scheme, credentials and literal-address checks before any connection. */
  checkUrl(raw: string): URL {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new UrlNotAllowed('invalid', `"${raw.slice(0, 200)}" is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new UrlNotAllowed('scheme', `imports fetch http and https URLs only, not ${url.protocol}`);
    }
    if (url.username || url.password) {
      throw new UrlNotAllowed('credentials', 'URLs with credentials (user:password@) are refused: they would be stored and logged; use a pre-signed URL instead');
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host)) this.checkAddress(host, host);
    return url;
  }

  /** Throws UrlNotAllowed when `ip` (resolved from `host`) is in a denied range and not allowed. */
  checkAddress(ip: string, host: string): void {
    if (this.allowedHosts.has(host.toLowerCase())) return;
    if (this.allowedCidrs.some((c) => inCidr(ip, c))) return;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    if (mapped) return this.checkAddress(mapped[1]!, host);
    if (this.denied.some((c) => inCidr(ip, c))) {
      throw new UrlNotAllowed(
        'address',
        `${host} resolves to ${ip}, a loopback, link-local or private address; imports may not reach it unless an administrator allows it (imago serve --import-allow ${host})`,
      );
    }
  }
}
