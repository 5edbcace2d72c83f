/**
 * The one typed configuration, read once at start from flags and environment (flags win).
 * Nothing else in Imago reads process.env.
 *
 * | setting | flag | environment | default |
 * |---|---|---|---|
 * | data directory (SQLite file, blobs) | `--data DIR` | `IMAGO_DATA` | `./imago-data` |
 * | listen address | `--listen HOST:PORT` | `IMAGO_LISTEN` | `127.0.0.1:9393` |
 * | catalog database | `--database URL` | `IMAGO_DATABASE_URL` | `sqlite:<data>/imago.db` |
 * | md5 checksums (Glance `checksum`) | `--md5` | `IMAGO_MD5=1` | off |
 * | Glance `os_hash_algo`: sha512 or sha256 (both computed in the one ingest pass; others refused at start) | `--os-hash-algo A` | `IMAGO_OS_HASH_ALGO` | sha512 |
 * | largest stored image (bytes) | `--max-image-size N` | `IMAGO_MAX_IMAGE_SIZE` | 1 TiB |
 * | largest virtual size (bytes) | `--max-virtual-size N` | `IMAGO_MAX_VIRTUAL_SIZE` | 64 TiB |
 * | compressed uploads: expansion ratio limit (past 64 MiB of output) | | `IMAGO_MAX_COMPRESSION_RATIO` | 5000 |
 * | compressed uploads: ratio limit for output that is nearly all zeros (the zero-bomb rule; 0 = off) | | `IMAGO_ZERO_BOMB_RATIO` | 100 |
 * | import: hosts/ranges allowed despite the private-address rule | `--import-allow A,B` | `IMAGO_IMPORT_ALLOW` | none |
 * | GC schedule (cron) | `--gc-schedule CRON` | `IMAGO_GC_SCHEDULE` | none |
 * | GC grace period for fresh blobs (ms) | | `IMAGO_GC_GRACE_MS` | 1 hour |
 * | server for remote CLI verbs | `--server URL` | `IMAGO_URL` | `http://127.0.0.1:9393` |
 * | API token for remote CLI verbs | `--token T` | `IMAGO_TOKEN` | `<data>/admin.token` when readable |
 * | OIDC: at most one JWKS refetch per issuer per (ms) | | `IMAGO_OIDC_JWKS_COOLDOWN_MS` | 30000 |
 * | OIDC: allowed clock skew (s) | | `IMAGO_OIDC_CLOCK_SKEW` | 60 |
 * | convert-on-import: store images in this format (raw, qcow2, vmdk, vhd, vhdx, vdi) | `--convert-to FMT` | `IMAGO_CONVERT_TO` | none (keep as uploaded) |
 * | request body: longest wait for the next byte before the request is cut off | | `IMAGO_BODY_IDLE_TIMEOUT` (`60`, `60s`, `1500ms`) | 60 s |
 * | event streams: how often an open stream re-checks its credentials | | `IMAGO_EVENTS_RECHECK` (`3`, `3s`, `500ms`) | 3 s |
 * | OCI: an upload session that receives nothing for this long expires (BLOB_UPLOAD_UNKNOWN) | | `IMAGO_OCI_UPLOAD_TTL` (`86400`, `3600s`, `500ms`) | 24 h |
 * | web console: the built console's folder | | `IMAGO_CONSOLE_DIR` | the package's `web/dist` |
 * | web console: OIDC sign-in (authorization code + PKCE) against this issuer, as this public client | | `IMAGO_CONSOLE_OIDC_ISSUER`, `IMAGO_CONSOLE_OIDC_CLIENT_ID`, `IMAGO_CONSOLE_OIDC_SCOPES` (default `openid profile email`), `IMAGO_CONSOLE_OIDC_BEARER` (`access_token` or `id_token`: which token the console sends) | none (token sign-in only) |
 */
import { isIP } from 'node:net';
import { resolve, join } from 'node:path';
import { CONVERT_FORMATS, OS_HASH_ALGOS, type ConvertFormat, type OsHashAlgo } from './domain/images/image.js';
import type { InspectLimits } from './formats/limits.js';

export interface Config {
  dataDir: string;
  listen: { host: string; port: number };
  databaseUrl: string;
  md5: boolean;
  /** the hash the Glance door shows as os_hash_algo / os_hash_value */
  osHashAlgo: OsHashAlgo;
  maxImageBytes: number;
  inspectLimits: Partial<InspectLimits>;
  importAllow: { hosts: string[]; cidrs: string[] };
  gcSchedule?: string;
  gcGraceMs: number;
  serverUrl: string;
  token?: string;
  oidcJwksCooldownMs: number;
  oidcClockSkewSec: number;
  /** convert-on-import target for every image (projects may override); absent = keep as uploaded */
  convertTo?: ConvertFormat;
  /** a request body that sends no byte for this long is cut off (the upload ends in `error`) */
  bodyIdleTimeoutMs: number;
  /** an open event stream re-authorizes its credentials this often (and before every event) */
  eventsRecheckMs: number;
  /** an OCI upload session that received nothing for this long expires */
  ociUploadTtlMs: number;
  /** a resumable (tus) upload not finished this long after its creation expires (its bytes are removed) */
  resumableUploadTtlMs: number;
  /** a resumable upload that receives nothing this long has its ingest suspended (rebuilt from its bytes on the next PATCH) */
  resumableSuspendIdleMs: number;
  /** an upload URL's token is valid this long unless its creator asks for less */
  uploadUrlTtlMs: number;
  /** the built web console (absent: the package's web/dist) */
  consoleDir?: string;
  /** OIDC sign-in of the web console; absent = sign in with an Imago token only */
  consoleOidc?: ConsoleOidc;
}

/** What the web console needs to sign a user in with OIDC (authorization code + PKCE, a public client). */
export interface ConsoleOidc {
  issuer: string;
  clientId: string;
  scopes: string;
  /** which token of the issuer's answer the console sends as its bearer (its audience must be the one Imago trusts) */
  bearer: 'access_token' | 'id_token';
}

export interface ConfigFlags {
  data?: string;
  listen?: string;
  database?: string;
  md5?: boolean;
  osHashAlgo?: string;
  maxImageSize?: string;
  maxVirtualSize?: string;
  importAllow?: string;
  gcSchedule?: string;
  server?: string;
  token?: string;
  convertTo?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const TiB = 1024 ** 4;

export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const dataDir = resolve(flags.data ?? env.IMAGO_DATA ?? 'imago-data');
  const listen = parseListen(flags.listen ?? env.IMAGO_LISTEN ?? '127.0.0.1:9393');
  const databaseUrl = flags.database ?? env.IMAGO_DATABASE_URL ?? `sqlite:${join(dataDir, 'imago.db')}`;
  const md5 = flags.md5 ?? /^(1|true|yes|on)$/i.test(env.IMAGO_MD5 ?? '');
  const osHashAlgo = parseOsHashAlgo(flags.osHashAlgo ?? env.IMAGO_OS_HASH_ALGO);
  const maxImageBytes = parseBytes('max image size', flags.maxImageSize ?? env.IMAGO_MAX_IMAGE_SIZE, TiB);
  const maxVirtual = flags.maxVirtualSize ?? env.IMAGO_MAX_VIRTUAL_SIZE;
  const inspectLimits: Partial<InspectLimits> = {};
  if (maxVirtual !== undefined) inspectLimits.maxVirtualSize = BigInt(parseBytes('max virtual size', maxVirtual, 0));
  if (env.IMAGO_MAX_COMPRESSION_RATIO !== undefined)
    inspectLimits.maxCompressionRatio = parseRatio('IMAGO_MAX_COMPRESSION_RATIO', env.IMAGO_MAX_COMPRESSION_RATIO, false);
  if (env.IMAGO_ZERO_BOMB_RATIO !== undefined) inspectLimits.zeroBombRatio = parseRatio('IMAGO_ZERO_BOMB_RATIO', env.IMAGO_ZERO_BOMB_RATIO, true);
  const importAllow = parseAllow(flags.importAllow ?? env.IMAGO_IMPORT_ALLOW ?? '');
  const gcSchedule = flags.gcSchedule ?? env.IMAGO_GC_SCHEDULE;
  const gcGraceMs = parseBytes('gc grace ms', env.IMAGO_GC_GRACE_MS, 3600_000);
  const serverUrl = (flags.server ?? env.IMAGO_URL ?? `http://127.0.0.1:9393`).replace(/\/+$/, '');
  const token = flags.token ?? env.IMAGO_TOKEN;
  const oidcJwksCooldownMs = parseBytes('OIDC JWKS cooldown ms', env.IMAGO_OIDC_JWKS_COOLDOWN_MS, 30_000);
  const oidcClockSkewSec = parseBytes('OIDC clock skew seconds', env.IMAGO_OIDC_CLOCK_SKEW, 60);
  const convertTo = parseConvertTo(flags.convertTo ?? env.IMAGO_CONVERT_TO);
  const bodyIdleTimeoutMs = parseDuration('body idle timeout', env.IMAGO_BODY_IDLE_TIMEOUT, 60_000);
  const eventsRecheckMs = parseDuration('event stream recheck interval', env.IMAGO_EVENTS_RECHECK, 3_000);
  const ociUploadTtlMs = parseDuration('OCI upload session lifetime', env.IMAGO_OCI_UPLOAD_TTL, 24 * 3600_000);
  const resumableUploadTtlMs = parseDuration('resumable upload lifetime', env.IMAGO_UPLOAD_TTL, 24 * 3600_000);
  const resumableSuspendIdleMs = parseDuration('resumable upload idle suspension', env.IMAGO_UPLOAD_IDLE_SUSPEND, 300_000);
  const uploadUrlTtlMs = parseDuration('upload URL lifetime', env.IMAGO_UPLOAD_URL_TTL, 3600_000);
  const consoleDir = env.IMAGO_CONSOLE_DIR ? resolve(env.IMAGO_CONSOLE_DIR) : undefined;
  const consoleOidc = parseConsoleOidc(env);
  return {
    dataDir,
    listen,
    databaseUrl,
    md5,
    osHashAlgo,
    maxImageBytes,
    inspectLimits,
    importAllow,
    gcSchedule,
    gcGraceMs,
    serverUrl,
    token,
    oidcJwksCooldownMs,
    oidcClockSkewSec,
    convertTo,
    bodyIdleTimeoutMs,
    eventsRecheckMs,
    ociUploadTtlMs,
    resumableUploadTtlMs,
    resumableSuspendIdleMs,
    uploadUrlTtlMs,
    consoleDir,
    consoleOidc,
  };
}

/**
 * Glance's `hashing_algorithm` takes any hashlib name; Imago offers what its one ingest pass already
 * computes (a third hash would be a second pass over the bytes, or a slower one), and refuses the rest.
 */
function parseOsHashAlgo(s: string | undefined): OsHashAlgo {
  if (s === undefined || s === '') return 'sha512';
  const a = s.toLowerCase();
  if (!(OS_HASH_ALGOS as readonly string[]).includes(a))
    throw new ConfigError(
      `os_hash_algo "${s}" is not supported: the ingest pass computes ${OS_HASH_ALGOS.join(' and ')} (sha256 is the blob address); set IMAGO_OS_HASH_ALGO / --os-hash-algo to one of them (sha512 is Glance's default)`,
    );
  return a as OsHashAlgo;
}

function parseConsoleOidc(env: NodeJS.ProcessEnv): ConsoleOidc | undefined {
  const issuer = env.IMAGO_CONSOLE_OIDC_ISSUER;
  const clientId = env.IMAGO_CONSOLE_OIDC_CLIENT_ID;
  if (!issuer && !clientId) return undefined;
  if (!issuer || !clientId) throw new ConfigError('console OIDC sign-in needs both IMAGO_CONSOLE_OIDC_ISSUER and IMAGO_CONSOLE_OIDC_CLIENT_ID');
  if (!/^https?:\/\//.test(issuer)) throw new ConfigError(`IMAGO_CONSOLE_OIDC_ISSUER "${issuer}" must be an http(s) URL`);
  const bearer = env.IMAGO_CONSOLE_OIDC_BEARER ?? 'access_token';
  if (bearer !== 'access_token' && bearer !== 'id_token') throw new ConfigError(`IMAGO_CONSOLE_OIDC_BEARER must be access_token or id_token, got "${bearer}"`);
  return { issuer: issuer.replace(/\/+$/, ''), clientId, scopes: env.IMAGO_CONSOLE_OIDC_SCOPES ?? 'openid profile email', bearer };
}

function parseConvertTo(s: string | undefined): ConvertFormat | undefined {
  if (s === undefined || s === '' || s === 'none') return undefined;
  const f = s.toLowerCase();
  if (!(CONVERT_FORMATS as readonly string[]).includes(f)) throw new ConfigError(`convert-to "${s}" is not one of ${CONVERT_FORMATS.join(', ')} (or none)`);
  return f as ConvertFormat;
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`listen address "${s}" is not HOST:PORT (e.g. 127.0.0.1:9393)`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };

/** "1073741824", "10G", "512M", "1TiB" → bytes. */
export function parseBytes(what: string, s: string | undefined, fallback: number): number {
  if (s === undefined || s === '') return fallback;
  const m = /^(\d+)\s*([kmgtp]?)(?:i?b)?$/i.exec(s.trim());
  if (!m) throw new ConfigError(`${what} "${s}" is not a size (bytes, or with K/M/G/T suffix)`);
  const v = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(v)) throw new ConfigError(`${what} "${s}" is too large`);
  return v;
}

/** "60" or "60s" (seconds), "1500ms" → milliseconds; must be more than 0. */
export function parseDuration(what: string, s: string | undefined, fallbackMs: number): number {
  if (s === undefined || s === '') return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s)?$/i.exec(s.trim());
  const ms = m ? Math.round(Number(m[1]) * (m[2]?.toLowerCase() === 'ms' ? 1 : 1000)) : NaN;
  if (!m || !(ms > 0) || !Number.isSafeInteger(ms))
    throw new ConfigError(`${what} "${s}" is not a duration greater than 0 (seconds, or with an s or ms suffix: 60, 60s, 1500ms)`);
  return ms;
}

/** "100" or "100:1" → 100; 0 only where it means "off". */
function parseRatio(what: string, s: string, zeroIsOff: boolean): number {
  const m = /^\s*(\d+)(?::1)?\s*$/.exec(s);
  const v = m ? Number(m[1]) : NaN;
  if (!Number.isSafeInteger(v) || (v === 0 && !zeroIsOff)) {
    throw new ConfigError(`${what} "${s}" is not an expansion ratio (a whole number such as 1000, or 1000:1${zeroIsOff ? '; 0 turns the rule off' : ''})`);
  }
  return v;
}

function parseAllow(s: string): { hosts: string[]; cidrs: string[] } {
  const hosts: string[] = [];
  const cidrs: string[] = [];
  for (const item of s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const [addr, bits] = item.split('/');
    if (isIP(addr!) !== 0) cidrs.push(bits === undefined ? `${addr}/${isIP(addr!) === 4 ? 32 : 128}` : item);
    else if (/^[a-z0-9.-]+$/i.test(item)) hosts.push(item.toLowerCase());
    else throw new ConfigError(`import allow entry "${item}" is neither a host name, an IP address nor a CIDR range`);
  }
  return { hosts, cidrs };
}
