/**
 * The REST door's error table: a domain error code → HTTP status, and every error → problem+json
 * (RFC 9457) with a stable `code`, here and nowhere else. An unknown error is a 500 with the
 * request id; its details go to the log only. Other doors keep their own table (Glance's error
 * body, OCI's `{errors:[...]}`), set as the error handler of their own plugin.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, type ErrorCode } from '../../domain/errors.js';
import { problem } from '../http/problem.js';

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
  NAME_INVALID: 400,
  REPOSITORY_NOT_FOUND: 404,
  MANIFEST_NOT_FOUND: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  UPLOAD_NOT_FOUND: 404,
  DIGEST_INVALID: 400,
};

export function sendProblem(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return reply;
  }
  // an upload stopped in the middle (its body iterator was closed): the socket cannot carry another
  // request, so say so instead of letting a keep-alive client reuse it
  // (refused before reading: Node drains the rest and the connection stays usable)
  if (!req.raw.complete && req.raw.readableDidRead) void reply.header('connection', 'close');
  if (err instanceof DomainError) {
    const status = STATUS_OF[err.code];
    // RFC 9110 §15.5.17: a 416 says how large the representation is
    if (err.code === 'RANGE_NOT_SATISFIABLE' && typeof err.details.size === 'number') void reply.header('content-range', `bytes */${err.details.size}`);
    return reply
      .code(status)
      .type('application/problem+json')
      .send(problem(err.code, status, err.message, req.id, err.details));
  }
  const fe = err as { validation?: unknown; statusCode?: number; code?: string; message?: string };
  if (fe.validation || (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500)) {
    const status = fe.statusCode ?? 400;
    const code = FRAMEWORK_CODES[status] ?? 'INVALID_REQUEST';
    return reply
      .code(status)
      .type('application/problem+json')
      .send(problem(code, status, frameworkDetail(fe), req.id));
  }
  req.log.error({ err }, 'unhandled error');
  return reply
    .code(500)
    .type('application/problem+json')
    .send(problem('INTERNAL', 500, `an internal error occurred; report request id ${req.id} to the operator`, req.id));
}

export function sendNoRoute(req: FastifyRequest, reply: FastifyReply): void {
  void reply
    .code(404)
    .type('application/problem+json')
    .send(problem('NOT_FOUND', 404, `no route for ${req.method} ${req.url.split('?')[0]}; see /api/v1/openapi.json`, req.id));
}

/** Fastify's own 4xx statuses → our stable codes (its FST_ERR_* names are not part of our API). */
const FRAMEWORK_CODES: Record<number, string> = { 408: 'REQUEST_TIMEOUT', 413: 'SIZE_LIMIT', 415: 'UNSUPPORTED_MEDIA_TYPE', 431: 'HEADERS_TOO_LARGE' };

function frameworkDetail(fe: { code?: string; message?: string }): string {
  switch (fe.code) {
    case 'FST_ERR_BAD_URL':
      return 'the URL path is not valid: a "%" must start an escape of two hex digits (%2F, %25); encode the path again';
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return `the body is not valid JSON (${fe.message ?? 'parse error'}); send a JSON object with Content-Type: application/json`;
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'the JSON body is larger than 1 MiB; image bytes go to PUT /api/v1/images/{id}/file as application/octet-stream';
    default:
      return `${fe.message ?? 'invalid request'}; see /api/v1/openapi.json`;
  }
}
