/**
 * The OCI door's error table: a domain error code → the distribution spec's status and error code
 * (v1.1 "Error Codes"), and every error → `{"errors":[{"code","message","detail"}]}`, here and
 * nowhere else. A 401 carries the door's `WWW-Authenticate` challenge (auth-challenge.ts); a 416
 * on an upload says how much the session holds (`Range`). An unknown error is a 500 with the
 * request id; its details go to the log only.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, type ErrorCode } from '../../domain/errors.js';
import { challenge } from './auth-challenge.js';

/** The spec's error codes (and UNAVAILABLE, TOOMANYREQUESTS's sibling for a backend that is down). */
export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNAVAILABLE';

export const OCI_ERROR_OF: Record<ErrorCode, [status: number, code: OciErrorCode]> = {
  IMAGE_NOT_FOUND: [404, 'NAME_UNKNOWN'],
  BLOB_NOT_FOUND: [404, 'BLOB_UNKNOWN'],
  INVALID_REQUEST: [400, 'UNSUPPORTED'],
  INVALID_STATE: [409, 'UNSUPPORTED'],
  CONFLICT: [409, 'UNSUPPORTED'],
  IMAGE_LOCKED: [409, 'UNSUPPORTED'],
  IMAGE_IN_USE: [409, 'UNSUPPORTED'],
  UNSAFE_IMAGE: [400, 'MANIFEST_INVALID'],
  DIGEST_MISMATCH: [400, 'DIGEST_INVALID'],
  SIZE_LIMIT: [413, 'SIZE_INVALID'],
  URL_NOT_ALLOWED: [400, 'UNSUPPORTED'],
  IMPORT_FAILED: [502, 'UNAVAILABLE'],
  RANGE_NOT_SATISFIABLE: [416, 'BLOB_UPLOAD_INVALID'],
  IDEMPOTENCY_MISMATCH: [400, 'UNSUPPORTED'],
  UNAVAILABLE: [503, 'UNAVAILABLE'],
  UNAUTHENTICATED: [401, 'UNAUTHORIZED'],
  FORBIDDEN: [403, 'DENIED'],
  // as Harbor: a push over quota is denied, with the quota named in the message
  QUOTA_EXCEEDED: [403, 'DENIED'],
  NOT_FOUND: [404, 'NAME_UNKNOWN'],
  REQUEST_TIMEOUT: [408, 'BLOB_UPLOAD_INVALID'],
  UNSUPPORTED_MEDIA_TYPE: [415, 'UNSUPPORTED'],
  EMPTY_IMAGE: [400, 'SIZE_INVALID'],
  NAME_INVALID: [400, 'NAME_INVALID'],
  REPOSITORY_NOT_FOUND: [404, 'NAME_UNKNOWN'],
  MANIFEST_NOT_FOUND: [404, 'MANIFEST_UNKNOWN'],
  MANIFEST_INVALID: [400, 'MANIFEST_INVALID'],
  MANIFEST_BLOB_UNKNOWN: [400, 'MANIFEST_BLOB_UNKNOWN'],
  UPLOAD_NOT_FOUND: [404, 'BLOB_UPLOAD_UNKNOWN'],
  DIGEST_INVALID: [400, 'DIGEST_INVALID'],
};

export interface OciError {
  code: OciErrorCode;
  message: string;
  detail: Record<string, unknown>;
}

export function ociErrors(code: OciErrorCode, message: string, detail: Record<string, unknown> = {}): { errors: OciError[] } {
  return { errors: [{ code, message, detail }] };
}

export function sendOciError(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return reply;
  }
  // a body stopped in the middle: the socket cannot carry another request
  if (!req.raw.complete && req.raw.readableDidRead) void reply.header('connection', 'close');
  if (err instanceof DomainError) {
    const status = OCI_ERROR_OF[err.code][0];
    let code = OCI_ERROR_OF[err.code][1];
    // an invalid request about an upload is the spec's BLOB_UPLOAD_INVALID
    if (code === 'UNSUPPORTED' && status === 400 && typeof err.details.upload === 'string') code = 'BLOB_UPLOAD_INVALID';
    if (status === 401) void reply.header('www-authenticate', challenge(req));
    if (err.code === 'RANGE_NOT_SATISFIABLE' && typeof err.details.uploaded === 'number') {
      const uploaded = err.details.uploaded;
      void reply.header('range', `0-${Math.max(0, uploaded - 1)}`).header('location', req.url.split('?')[0]!);
      if (typeof err.details.upload === 'string') void reply.header('docker-upload-uuid', err.details.upload);
    } else if (err.code === 'RANGE_NOT_SATISFIABLE' && typeof err.details.size === 'number') {
      void reply.header('content-range', `bytes */${err.details.size}`);
    }
    return reply
      .code(status)
      .type('application/json')
      .send(ociErrors(code, err.message, { ...err.details, requestId: req.id }));
  }
  const fe = err as { validation?: unknown; statusCode?: number; code?: string; message?: string };
  if (fe.validation || (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500)) {
    const status = fe.statusCode ?? 400;
    return reply
      .code(status)
      .type('application/json')
      .send(ociErrors(status === 413 ? 'SIZE_INVALID' : 'UNSUPPORTED', fe.message ?? 'invalid request', { requestId: req.id }));
  }
  req.log.error({ err }, 'unhandled error');
  return reply
    .code(500)
    .type('application/json')
    .send(ociErrors('UNAVAILABLE', `an internal error occurred; report request id ${req.id} to the operator`, { requestId: req.id }));
}

export function sendOciNoRoute(req: FastifyRequest, reply: FastifyReply): void {
  void reply
    .code(404)
    .type('application/json')
    .send(ociErrors('UNSUPPORTED', `no OCI endpoint for ${req.method} ${req.url.split('?')[0]!.slice(0, 300)}; see docs/OCI.md`, { requestId: req.id }));
}
