/**
 * Upload URLs (Deckhouse's `status.imageUploadURLs`): a token that allows one thing — sending the
 * bytes of one image — until it expires. It is not an API token: no other route takes it, it
 * carries no role, and it goes in the URL (`PUT /api/v1/upload/<token>`, `curl -T`) or as the
 * Bearer credential of the tus endpoint. Stored as the sha256 of its secret, like API tokens.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { DomainError } from '../errors.js';
import type { Principal } from './policy.js';

export const UPLOAD_TOKEN_PREFIX = 'imagoup_';
const UPLOAD_TOKEN_RE = /^imagoup_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface UploadGrant {
  id: string;
  imageId: string;
  /** the label of the principal that made it */
  createdBy: string;
  createdAt: Date;
  expiresAt: Date;
}

export interface UploadGrantRepository {
  createGrant(g: UploadGrant & { secretHash: string }): Promise<void>;
  grant(id: string): Promise<(UploadGrant & { secretHash: string }) | undefined>;
  /** removes the grants expired before `before`; returns how many */
  deleteGrantsBefore(before: Date): Promise<number>;
}

export function isUploadToken(s: string): boolean {
  return s.startsWith(UPLOAD_TOKEN_PREFIX);
}

export class UploadGrants {
  constructor(
    private readonly repo: UploadGrantRepository,
    private readonly opts: { maxTtlMs: number; now?: () => number },
  ) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  /** A new grant for `imageId` (the caller checked the right to upload to it). */
  async mint(imageId: string, createdBy: string, ttlMs?: number): Promise<{ grant: UploadGrant; token: string }> {
    const ttl = Math.min(ttlMs ?? this.opts.maxTtlMs, this.opts.maxTtlMs);
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.now();
    const grant: UploadGrant = { id, imageId, createdBy, createdAt: new Date(now), expiresAt: new Date(now + ttl) };
    await this.repo.createGrant({ ...grant, secretHash: hashSecret(secret) });
    return { grant, token: `${UPLOAD_TOKEN_PREFIX}${id}_${secret}` };
  }

  /** The grant a token stands for; UNAUTHENTICATED when malformed, unknown, wrong or expired. */
  async verify(token: string): Promise<UploadGrant> {
    const m = UPLOAD_TOKEN_RE.exec(token);
    if (!m) throw unauthenticated('the upload token is malformed (expected imagoup_<16 hex>_<43 base64url>); copy the upload URL again');
    const rec = await this.repo.grant(m[1]!);
    if (!rec || !timingSafeEqual(Buffer.from(hashSecret(m[2]!), 'hex'), Buffer.from(rec.secretHash, 'hex'))) {
      throw unauthenticated('the upload token is not valid (unknown or wrong secret); ask for a new upload URL');
    }
    if (rec.expiresAt.getTime() <= this.now()) {
      throw unauthenticated(`the upload URL expired at ${rec.expiresAt.toISOString()}; ask for a new one (POST /api/v1/images/${rec.imageId}/upload-url)`);
    }
    const { secretHash: _h, ...grant } = rec;
    return grant;
  }

  /** Forgets expired grants (GC). */
  sweep(): Promise<number> {
    return this.repo.deleteGrantsBefore(new Date(this.now()));
  }
}

/** The principal a grant acts as: no role anywhere, named for the audit log. */
export function grantPrincipal(g: UploadGrant): Principal {
  return { kind: 'token', label: `upload URL ${g.id} (made by ${g.createdBy})`, serverAdmin: false, roles: new Map() };
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

const unauthenticated = (message: string) => new DomainError('UNAUTHENTICATED', message);
