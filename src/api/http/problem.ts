/**
 * RFC 9457 problem+json with a stable `code`: the REST door's error body, and the body of the
 * refusals written before any door has the request (a malformed request, headers too large, a bad
 * URL). Which status a domain error gets is each door's own table (rest/error-table.ts).
 */
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
