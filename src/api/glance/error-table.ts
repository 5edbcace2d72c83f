/**
 * The Glance door's error table: a domain error code → the status Glance answers, and every error
 * → Glance's body (webob's): an HTML page by default, or `{"message", "code", "title"}` when the
 * client prefers JSON. glanceclient shows the text of either (its `exc.from_response`). An unknown
 * error is a 500 naming the request id; its details go to the log only.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, type ErrorCode } from '../../domain/errors.js';
import { header } from '../http/request-header.js';

export const GLANCE_STATUS_OF: Record<ErrorCode, number> = {
  IMAGE_NOT_FOUND: 404,
  BLOB_NOT_FOUND: 410,
  INVALID_REQUEST: 400,
  INVALID_STATE: 409,
  CONFLICT: 409,
  IMAGE_LOCKED: 409,
  IMAGE_IN_USE: 409,
  // Glance's format inspector refuses an unsafe image with 400
  UNSAFE_IMAGE: 400,
  DIGEST_MISMATCH: 400,
  SIZE_LIMIT: 413,
  URL_NOT_ALLOWED: 400,
  IMPORT_FAILED: 502,
  RANGE_NOT_SATISFIABLE: 416,
  IDEMPOTENCY_MISMATCH: 409,
  UNAVAILABLE: 503,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  QUOTA_EXCEEDED: 413,
  NOT_FOUND: 404,
  REQUEST_TIMEOUT: 408,
  UNSUPPORTED_MEDIA_TYPE: 415,
  EMPTY_IMAGE: 400,
  // the OCI registry's codes never come out of Glance's routes; mapped as their kind of error
  NAME_INVALID: 400,
  REPOSITORY_NOT_FOUND: 404,
  MANIFEST_NOT_FOUND: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  UPLOAD_NOT_FOUND: 404,
  DIGEST_INVALID: 400,
};

/** webob's reason phrases for the statuses this door sends */
const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  410: 'Gone',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  416: 'Requested Range Not Satisfiable',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

/** A refusal the door decides itself, with the status Glance gives it (403 read-only attribute, 409 missing property, ...). */
export class GlanceError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'GlanceError';
  }
}

export function sendGlanceError(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return reply;
  }
  if (!req.raw.complete && req.raw.readableDidRead) void reply.header('connection', 'close');
  if (err instanceof GlanceError) {
    for (const [k, v] of Object.entries(err.headers)) void reply.header(k, v);
    return glanceBody(req, reply, err.status, err.message);
  }
  if (err instanceof DomainError) {
    if (err.code === 'RANGE_NOT_SATISFIABLE' && typeof err.details.size === 'number') void reply.header('content-range', `bytes */${err.details.size}`);
    // Glance's words for an unknown image (the domain's message points at the REST API)
    const message = err.code === 'IMAGE_NOT_FOUND' && typeof err.details.id === 'string' ? `No image found with ID ${err.details.id}` : err.message;
    return glanceBody(req, reply, GLANCE_STATUS_OF[err.code], message);
  }
  const fe = err as { validation?: unknown; statusCode?: number; message?: string };
  if (fe.validation || (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500)) {
    return glanceBody(req, reply, fe.statusCode ?? 400, fe.message ?? 'invalid request');
  }
  req.log.error({ err }, 'unhandled error');
  return glanceBody(req, reply, 500, `an internal error occurred; report request id ${req.id} to the operator`);
}

export function sendGlanceNoRoute(req: FastifyRequest, reply: FastifyReply): void {
  void glanceBody(req, reply, 404, `The resource could not be found: no route for ${req.method} ${req.url.split('?')[0]}`);
}

function glanceBody(req: FastifyRequest, reply: FastifyReply, status: number, message: string): FastifyReply {
  const title = TITLES[status] ?? 'Error';
  void reply.code(status).header('x-openstack-request-id', `req-${req.id}`);
  if (prefersJson(header(req, 'accept'))) {
    // webob's JSON body substitutes the message unescaped (its `no_escape`); only the HTML page escapes it
    return reply.type('application/json').send(JSON.stringify({ message: `${message}<br /><br />\n\n\n`, code: `${status} ${title}`, title }));
  }
  const page = `<html>\n <head>\n  <title>${status} ${title}</title>\n </head>\n <body>\n  <h1>${status} ${title}</h1>\n  ${escapeHtml(message)}<br /><br />\n\n\n\n </body>\n</html>`;
  return reply.type('text/html; charset=UTF-8').send(page);
}

/** webob answers JSON when the client names application/json before text/html (glanceclient sends neither) */
function prefersJson(accept: string | undefined): boolean {
  if (!accept) return false;
  const json = accept.indexOf('application/json');
  const html = accept.indexOf('text/html');
  return json >= 0 && (html < 0 || json < html);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#x${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')};`);
}
