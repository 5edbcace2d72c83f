/**
 * The REST API's one error shape: RFC 9457 problem+json with a stable `code`. Domain errors map
 * to HTTP status here and nowhere else. An unknown error is a 500 with the request id; its details
 * go to the log only.
 */
import type { ErrorCode } from '../domain/errors.js';

export const STATUS_OF: Record<ErrorCode, number> = {
  IMAGE_NOT_FOUND: 404,
  BLOB_NOT_FOUND: 410,
  INVALID_REQUEST: 400,
  INVALID_STATE: 409,
  CONFLICT: 409,
  IMAGE_LOCKED: 409,
  IMAGE_IN_USE: 409,
  UNSAFE_IMAGE: 422,
  DIGEST_MISMATCH: 422,
  SIZE_LIMIT: 413,
  URL_NOT_ALLOWED: 422,
  IMPORT_FAILED: 502,
  RANGE_NOT_SATISFIABLE: 416,
  IDEMPOTENCY_MISMATCH: 422,
  UNAVAILABLE: 503,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  QUOTA_EXCEEDED: 413,
  NOT_FOUND: 404,
  REQUEST_TIMEOUT: 408,
  UNSUPPORTED_MEDIA_TYPE: 415,
  EMPTY_IMAGE: 422,
};

export interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail: string;
  requestId: string;
  [extra: string]: unknown;
}

export function problem(code: string, status: number, detail: string, requestId: string, extra: Record<string, unknown> = {}): Problem {
  return {
    type: `urn:imago:problem:${code.toLowerCase().replace(/_/g, '-')}`,
    title: code
      .toLowerCase()
      .split('_')
      .map((w, i) => (i === 0 ? w[0]!.toUpperCase() + w.slice(1) : w))
      .join(' '),
    status,
    code,
    detail,
    requestId,
    ...extra,
  };
}

export const PROBLEM_SCHEMA = {
  type: 'object',
  required: ['type', 'title', 'status', 'code', 'detail', 'requestId'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', description: 'stable error code (IMAGE_NOT_FOUND, UNSAFE_IMAGE, ...)' },
    detail: { type: 'string', description: 'what was wrong and what to do' },
    requestId: { type: 'string' },
  },
  additionalProperties: true,
} as const;
