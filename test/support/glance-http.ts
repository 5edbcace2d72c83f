/**
 * A request to a test server's Glance door (`/image`), as the Glance tests send them: an
 * X-Auth-Token (or none), a JSON or other body, and the reply's status, headers, text and JSON.
 */
export interface GlanceReply {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

export interface GlanceCallOptions {
  body?: unknown;
  /** the body's media type (default application/json); a string body is sent as it is */
  type?: string;
  headers?: Record<string, string>;
  /** null: no token */
  token?: string | null;
}

/** Makes `call(method, path, opts)` for the server at `url()` with `defaultToken()` unless the call names one. */
export function glanceCaller(url: () => string, defaultToken: () => string) {
  return async function call(method: string, path: string, opts: GlanceCallOptions = {}): Promise<GlanceReply> {
    const headers: Record<string, string> = { ...opts.headers };
    const t = opts.token === undefined ? defaultToken() : opts.token;
    if (t !== null) headers['x-auth-token'] = t;
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = opts.type ?? 'application/json';
      body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    }
    const r = await fetch(`${url()}/image${path}`, { method, headers, body });
    const text = await r.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: r.status, headers: r.headers, text, json };
  };
}
