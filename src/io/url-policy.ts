/**
 * Which URLs an import may fetch — the guard against server-side request forgery.
 *
 * - Schemes: http and https only (no file:, ftp:, gopher:, data:, ...).
 * - No userinfo (`user:pass@`): credentials in a URL end up stored with the job and in logs; we
 *   refuse rather than strip, so nobody is surprised by a request made without them.
 * - Addresses: loopback, link-local (incl. cloud metadata 169.254.169.254), private, CGNAT,
 *   unspecified, multicast, broadcast, documentation, benchmarking and other reserved ranges are
 *   refused; in IPv6 only global unicast (2000::/3, less its special blocks) is reachable.
 *   IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses are judged by the IPv4
 *   address they carry, since that is where the packets go.
 * - An administrator may allow a host name (exact match) or a CIDR range; both are explicit.
 *
 * `checkUrl` runs before a request (scheme, userinfo, literal addresses — Node does not resolve a
 * literal, so this is the only check it gets); `checkAddress` runs on every address a host name
 * resolves to, inside the connect itself (see http-source.ts), so there is no window for DNS
 * rebinding between the check and the connection. CIDR matching is ours: small and tested.
 */
import { isIP } from 'node:net';

export type UrlRefusal = 'invalid-url' | 'scheme' | 'credentials' | 'address';

export class UrlNotAllowed extends Error {
  constructor(
    readonly reason: UrlRefusal,
    message: string,
  ) {
    super(message);
    this.name = 'UrlNotAllowed';
  }
}

export interface IpAddress {
  version: 4 | 6;
  bits: bigint;
}

/** Parses a textual IPv4 or IPv6 address (zone ids dropped); undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  const version = isIP(text);
  if (version === 4) return { version, bits: text.split('.').reduce((n, octet) => (n << 8n) | BigInt(Number(octet)), 0n) };
  if (version !== 6) return undefined;
  let s = text.toLowerCase();
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    // trailing embedded IPv4 (::ffff:1.2.3.4) becomes two hex groups
    const v4 = parseIp(dotted[1]!)!.bits;
    s = `${s.slice(0, -dotted[1]!.length)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return { version, bits: groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

export class Cidr {
  private constructor(
    readonly version: 4 | 6,
    readonly bits: bigint,
    readonly prefix: number,
    readonly text: string,
  ) {}

  /** "10.0.0.0/8", "fe80::/10", or a bare address (a one-address range). Bits past the prefix are an error. */
  static parse(text: string): Cidr {
    const [addr, prefixText, extra] = text.trim().split('/');
    const ip = parseIp(addr ?? '');
    if (!ip || extra !== undefined) throw new Error(`"${text}" is not an IP address or CIDR range (e.g. 10.20.0.0/16, fd00:1::/64)`);
    const width = ip.version === 4 ? 32 : 128;
    if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) throw new Error(`"${text}" has an invalid prefix length; use /0 to /${width}`);
    const prefix = prefixText === undefined ? width : Number(prefixText);
    if (prefix > width) throw new Error(`"${text}" has an invalid prefix length; use /0 to /${width}`);
    const hostBits = BigInt(width - prefix);
    const network = (ip.bits >> hostBits) << hostBits;
    if (network !== ip.bits) {
      throw new Error(
        `"${text}" has bits set past its /${prefix} prefix; write the network address (${format({ version: ip.version, bits: network })}/${prefix})`,
      );
    }
    return new Cidr(ip.version, network, prefix, prefixText === undefined ? `${addr}/${width}` : text.trim());
  }

  contains(ip: IpAddress): boolean {
    if (ip.version !== this.version) return false;
    const hostBits = BigInt((this.version === 4 ? 32 : 128) - this.prefix);
    return ip.bits >> hostBits === this.bits >> hostBits;
  }
}

function format(ip: IpAddress): string {
  if (ip.version === 4) return [24n, 16n, 8n, 0n].map((s) => String((ip.bits >> s) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((ip.bits >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

const range = (cidr: string, label: string) => ({ cidr: Cidr.parse(cidr), label });

// First match names the refusal, so narrower ranges come before wider ones.
const DENIED_V4 = [
  range('0.0.0.0/8', 'unspecified ("this network")'),
  range('10.0.0.0/8', 'private'),
  range('100.64.0.0/10', 'carrier-grade NAT (shared address space)'),
  range('127.0.0.0/8', 'loopback'),
  range('169.254.0.0/16', 'link-local (where cloud metadata services live)'),
  range('172.16.0.0/12', 'private'),
  range('192.0.0.0/24', 'reserved (IETF protocol assignments)'),
  range('192.0.2.0/24', 'reserved (documentation)'),
  range('192.88.99.0/24', 'reserved (6to4 relay)'),
  range('192.168.0.0/16', 'private'),
  range('198.18.0.0/15', 'reserved (benchmarking)'),
  range('198.51.100.0/24', 'reserved (documentation)'),
  range('203.0.113.0/24', 'reserved (documentation)'),
  range('224.0.0.0/4', 'multicast'),
  range('255.255.255.255/32', 'broadcast'),
  range('240.0.0.0/4', 'reserved'),
];
const DENIED_V6 = [
  range('::/128', 'unspecified'),
  range('::1/128', 'loopback'),
  range('::/96', 'reserved (IPv4-compatible, deprecated)'),
  range('64:ff9b:1::/48', 'reserved (local-use NAT64)'),
  range('100::/64', 'reserved (discard)'),
  range('2001::/23', 'reserved (IETF protocol assignments, incl. Teredo)'),
  range('2001:db8::/32', 'reserved (documentation)'),
  range('2002::/16', 'reserved (6to4)'),
  range('3fff::/20', 'reserved (documentation)'),
  range('fc00::/7', 'private (unique local)'),
  range('fe80::/10', 'link-local'),
  range('fec0::/10', 'reserved (site-local, deprecated)'),
  range('ff00::/8', 'multicast'),
];
const GLOBAL_UNICAST_V6 = Cidr.parse('2000::/3');
/** IPv6 forms whose packets go to the IPv4 address in their low 32 bits. */
const CARRIES_V4 = [range('::ffff:0:0/96', 'IPv4-mapped'), range('64:ff9b::/96', 'NAT64')];

export interface UrlPolicyOptions {
  /** host names reachable whatever they resolve to (exact, case-insensitive) */
  allowHosts?: string[];
  /** address ranges reachable although denied by default, e.g. "10.20.0.0/16", "127.0.0.1" */
  allowCidrs?: string[];
  /** same as allowHosts (the shape config.importAllow has) */
  hosts?: string[];
  /** same as allowCidrs */
  cidrs?: string[];
}

export class UrlPolicy {
  private readonly allowHosts: Set<string>;
  private readonly allowCidrs: Cidr[];

  /** Throws on an allow entry that is not a host name, an address or a CIDR range. */
  constructor(options: UrlPolicyOptions = {}) {
    this.allowHosts = new Set([...(options.allowHosts ?? []), ...(options.hosts ?? [])].map(normalizeHost));
    this.allowCidrs = [...(options.allowCidrs ?? []), ...(options.cidrs ?? [])].map((c) => Cidr.parse(c));
  }

  /** Scheme, userinfo and literal-address checks, before any connection. Returns the parsed URL. */
  checkUrl(input: string | URL): URL {
    const raw = String(input);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new UrlNotAllowed('invalid-url', `"${raw.slice(0, 200)}" is not a valid URL; give an absolute http:// or https:// URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new UrlNotAllowed('scheme', `refused ${url.protocol} URL: imports fetch http:// and https:// URLs only`);
    }
    if (url.username || url.password) {
      throw new UrlNotAllowed(
        'credentials',
        `refused a URL with credentials (user:password@${url.host}): they would be stored with the job and logged; use a pre-signed URL or a token in the query string instead`,
      );
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (!host) throw new UrlNotAllowed('invalid-url', `"${raw.slice(0, 200)}" has no host`);
    // WHATWG URL parsing already turned 0x7f.1, 2130706433 and the like into dotted form
    if (isIP(host)) this.checkAddress(host, host);
    return url;
  }

  /**
   * Throws UrlNotAllowed when `ip` (what `host` resolved to; the address itself when omitted)
   * lies in a denied range and neither the host nor a range covering the address is allowed.
   */
  checkAddress(ip: string, host: string = ip): void {
    if (this.allowHosts.has(normalizeHost(host))) return;
    const addr = parseIp(ip);
    if (!addr) throw new UrlNotAllowed('address', `${host} resolved to "${ip}", which is not an IP address; refused`);
    const carried = carriedV4(addr);
    if (this.allowCidrs.some((c) => c.contains(addr) || (carried !== undefined && c.contains(carried.v4)))) return;
    const denied = classify(addr);
    if (!denied) return;
    const subject = host === ip ? `${ip}: it is` : `${host}: it resolves to ${ip},`;
    const via = denied.via ? ` the ${denied.via} form of ${denied.v4}, and that is` : '';
    throw new UrlNotAllowed(
      'address',
      `refused ${subject}${via} in the ${denied.label} range ${denied.cidr}; imports may not reach loopback, link-local or private addresses, nor other special-purpose ones. ` +
        `An administrator who trusts it can allow it with --import-allow ${host} ` +
        `(${denied.cidr.endsWith('/128') || denied.cidr.endsWith('/32') ? '' : `or the whole range with --import-allow ${denied.cidr}; `}env IMAGO_IMPORT_ALLOW)`,
    );
  }
}

function normalizeHost(host: string): string {
  return host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');
}

function carriedV4(addr: IpAddress): { v4: IpAddress; label: string } | undefined {
  if (addr.version !== 6) return undefined;
  const form = CARRIES_V4.find((r) => r.cidr.contains(addr));
  return form && { v4: { version: 4, bits: addr.bits & 0xffffffffn }, label: form.label };
}

function classify(addr: IpAddress): { label: string; cidr: string; via?: string; v4?: string } | undefined {
  const carried = carriedV4(addr);
  if (carried) {
    const inner = classify(carried.v4);
    return inner && { ...inner, via: carried.label, v4: format(carried.v4) };
  }
  const hit = (addr.version === 4 ? DENIED_V4 : DENIED_V6).find((r) => r.cidr.contains(addr));
  if (hit) return { label: hit.label, cidr: hit.cidr.text };
  if (addr.version === 6 && !GLOBAL_UNICAST_V6.contains(addr)) return { label: 'reserved (outside global unicast 2000::/3)', cidr: `${format(addr)}/128` };
  return undefined;
}
