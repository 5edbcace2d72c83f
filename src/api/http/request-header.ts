/** One request header as a string (the first, when a client sent it more than once). */
import type { FastifyRequest } from 'fastify';

export function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
