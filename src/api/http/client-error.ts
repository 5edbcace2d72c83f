/**
 * Requests node:http refuses before Fastify sees them (headers too large, malformed request line
 * or headers, headers that never finish): the same problem+json as every other error, written on
 * the raw socket, which is then closed (node:http cannot read another request from it).
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { problem } from './problem.js';

const REFUSALS: Record<string, { status: number; code: string; detail: string }> = {
  HPE_HEADER_OVERFLOW: {
    status: 431,
    code: 'HEADERS_TOO_LARGE',
    detail: 'the request headers are larger than the server accepts (16 KiB in all); send fewer or shorter headers',
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    code: 'REQUEST_TIMEOUT',
    detail: 'the request headers did not arrive in time; send the whole request again',
  },
};

const MALFORMED = {
  status: 400,
  code: 'INVALID_REQUEST',
  detail: 'the request is not valid HTTP/1.1 (request line or headers malformed); check the client or proxy sending it',
};

export function problemOnSocket(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const r = (err.code && REFUSALS[err.code]) || MALFORMED;
  if (socket.writable) {
    const body = JSON.stringify(problem(r.code, r.status, r.detail, randomUUID()));
    socket.write(
      `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status]}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
