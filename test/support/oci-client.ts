/**
 * A small OCI distribution client over real HTTP for the conformance tests: requests with Basic
 * credentials (any username, an Imago token as the password), blob and manifest pushes.
 */
import { createHash } from 'node:crypto';

export interface OciResponse {
  status: number;
  headers: Headers;
  body: Buffer;
  /** the body parsed, when it is JSON */
  json: any;
}

export function sha256(bytes: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export class OciClient {
  constructor(
    readonly base: string,
    /** an Imago token, or undefined for anonymous */
    readonly token: string | undefined,
  ) {}

  as(token: string | undefined): OciClient {
    return new OciClient(this.base, token);
  }

  async req(method: string, path: string, opts: { body?: Uint8Array | string; headers?: Record<string, string> } = {}): Promise<OciResponse> {
    const headers: Record<string, string> = { ...opts.headers };
    if (this.token && headers.authorization === undefined) headers.authorization = `Basic ${Buffer.from(`oci-user:${this.token}`).toString('base64')}`;
    const res = await fetch(`${this.base}${path}`, { method, headers, body: opts.body, redirect: 'manual' });
    const body = Buffer.from(await res.arrayBuffer());
    let json: any;
    if ((res.headers.get('content-type') ?? '').includes('json') && body.length > 0) json = JSON.parse(body.toString('utf8'));
    return { status: res.status, headers: res.headers, body, json };
  }

  /** POST + PUT (monolithic); returns the digest. */
  async pushBlob(repo: string, bytes: Uint8Array | string): Promise<string> {
    const digest = sha256(bytes);
    const start = await this.req('POST', `/v2/${repo}/blobs/uploads/`);
    if (start.status !== 202) throw new Error(`POST uploads: ${start.status} ${start.body.toString()}`);
    const location = start.headers.get('location')!;
    const sep = location.includes('?') ? '&' : '?';
    const put = await this.req('PUT', `${location}${sep}digest=${digest}`, { body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`PUT upload: ${put.status} ${put.body.toString()}`);
    return digest;
  }

  async putManifest(repo: string, reference: string, manifest: unknown, mediaType: string): Promise<OciResponse> {
    const body = typeof manifest === 'string' ? manifest : JSON.stringify(manifest);
    return this.req('PUT', `/v2/${repo}/manifests/${reference}`, { body, headers: { 'content-type': mediaType } });
  }
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

/** An OCI image manifest over a config and layers (pushed beforehand). */
export function imageManifest(
  config: { digest: string; size: number; mediaType?: string },
  layers: { digest: string; size: number }[],
  extra: Record<string, unknown> = {},
) {
  return {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: config.mediaType ?? 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.digest, size: l.size })),
    ...extra,
  };
}
