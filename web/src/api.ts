/**
 * The console's only way to the server: the public REST API (/api/v1), with the signed-in
 * bearer token on every request. A refusal becomes an ApiError carrying the problem+json body,
 * whose `detail` (what was wrong and what to do) is what the console shows.
 */
import { currentToken, signOut } from './auth.js';

export interface Problem {
  title?: string;
  status?: number;
  code?: string;
  detail?: string;
  requestId?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail ?? problem.title ?? `the server answered ${status}`);
  }
}

export function authHeaders(): Record<string, string> {
  const t = currentToken();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/** The problem of a failed answer (or one made up from its status when the body is not one). */
export async function problemOf(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  let p: Problem = {};
  try {
    p = JSON.parse(text) as Problem;
  } catch {
    p = { title: res.statusText, detail: text.slice(0, 500) || `the server answered ${res.status} ${res.statusText}` };
  }
  return new ApiError(res.status, p);
}

export async function api<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers: { ...authHeaders(), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, { title: 'Network error', detail: `the server could not be reached (${(e as Error).message}); check your connection and retry` });
  }
  if (res.status === 401 && currentToken()) {
    // the token expired or was revoked: back to the sign-in page, saying why
    const err = await problemOf(res);
    signOut(err.message);
    throw err;
  }
  if (!res.ok) throw await problemOf(res);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const get = <T>(path: string) => api<T>('GET', path);

export function query(params: Record<string, string | string[] | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === '') continue;
    for (const x of Array.isArray(v) ? v : [v]) if (x !== '') q.append(k, x);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// ---- the shapes the console reads (see src/api/rest/image-json.ts, access-routes.ts) ----------

export interface Image {
  id: string;
  name: string;
  description?: string;
  type: string;
  diskFormat?: string;
  containerFormat?: string;
  properties: Record<string, string>;
  tags: string[];
  project: string | null;
  owner?: string;
  visibility: 'private' | 'project' | 'shared' | 'public';
  permissions: string;
  permissionsText: string;
  state: string;
  stateReason?: string;
  progress?: number;
  digest?: string;
  storedSize?: number;
  virtualSize?: number;
  checksums: { md5?: string; sha512?: string };
  inspection?: {
    format: string;
    subformat?: string;
    compression?: string[];
    details: Record<string, unknown>;
    findings: { code: string; severity: string; message: string }[];
  };
  glanceStatus: string;
  openNebulaState: string;
  deckhousePhase: string;
  createdAt: string;
  updatedAt: string;
  version: number;
}

export interface Whoami {
  kind: string;
  user?: string;
  serverAdmin: boolean;
  roles: Record<string, string>;
}

export interface ConsoleConfig {
  oidc: { issuer: string; clientId: string; scopes: string; bearer: 'access_token' | 'id_token' } | null;
  doors: { rest: string; oci: string; glance: string };
}
