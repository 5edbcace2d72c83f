/**
 * The catalog of domain errors: stable codes, no HTTP. Each API maps them to its wire shape once
 * (REST problem+json, Glance's error body, OCI `{errors: [...]}`). Messages say what was wrong and
 * what to do.
 */
import type { Finding } from '../formats/findings.js';

export const ERROR_CODES = [
  'IMAGE_NOT_FOUND',
  'BLOB_NOT_FOUND',
  'INVALID_REQUEST',
  'INVALID_STATE', // the lifecycle forbids the action now
  'CONFLICT', // concurrent change (another upload won, version mismatch)
  'IMAGE_LOCKED',
  'IMAGE_IN_USE',
  'UNSAFE_IMAGE', // the format engine refused the bytes
  'DIGEST_MISMATCH',
  'SIZE_LIMIT', // announced or actual size over a limit
  'URL_NOT_ALLOWED', // import URL refused by policy
  'IMPORT_FAILED',
  'RANGE_NOT_SATISFIABLE',
  'IDEMPOTENCY_MISMATCH', // same Idempotency-Key, different request
  'UNAVAILABLE', // a backend is down
  'UNAUTHENTICATED', // no credentials, or credentials that are invalid, expired or revoked
  'FORBIDDEN', // authenticated, may see the target, may not do this
  'QUOTA_EXCEEDED', // a project quota would be exceeded
  'NOT_FOUND', // a project, user, group, token or member that does not exist
  'REQUEST_TIMEOUT', // the client stopped sending the request (body idle too long)
  'UNSUPPORTED_MEDIA_TYPE', // a body in a Content-Type the route does not take
  'EMPTY_IMAGE', // an upload or import of 0 bytes
  // the OCI registry concern (domain/registry): each has its own code in the distribution spec
  'NAME_INVALID', // a repository name outside the grammar (or without a project)
  'REPOSITORY_NOT_FOUND', // no such repository, or the caller may not know it exists
  'MANIFEST_NOT_FOUND', // no manifest under that tag or digest
  'MANIFEST_INVALID', // a manifest that does not parse, is over a limit, or breaks its media type's rules
  'MANIFEST_BLOB_UNKNOWN', // a manifest names a blob or child manifest the repository does not hold
  'UPLOAD_NOT_FOUND', // an upload session that never existed, finished, was cancelled or expired
  'DIGEST_INVALID', // a digest that is not sha256:<64 hex>
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const notFound = (id: string) =>
  new DomainError('IMAGE_NOT_FOUND', `image ${id} does not exist (or was deleted); list images with GET /api/v1/images`, { id });

export const forbidden = (message: string, details: Record<string, unknown> = {}) => new DomainError('FORBIDDEN', message, details);

export const invalid = (message: string, details: Record<string, unknown> = {}) => new DomainError('INVALID_REQUEST', message, details);

export const conflict = (message: string, details: Record<string, unknown> = {}) => new DomainError('CONFLICT', message, details);

export function unsafeImage(findings: Finding[]): DomainError {
  const errors = findings.filter((f) => f.severity === 'error');
  const first = errors[0];
  return new DomainError(
    'UNSAFE_IMAGE',
    first ? `image refused: ${first.message}${errors.length > 1 ? ` (and ${errors.length - 1} more findings)` : ''}` : 'image refused',
    { findings },
  );
}
