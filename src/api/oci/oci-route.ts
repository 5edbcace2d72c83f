/**
 * One endpoint of the OCI door. Repository names contain slashes (`<project>/<repo>/...`), which
 * Fastify's path parameters cannot capture, so the door has one catch-all route and each resource
 * file lists its endpoints as a method and a pattern on the path after `/v2/`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';

export type OciMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface OciRoute {
  methods: readonly OciMethod[];
  /** matched against the path after `/v2/`; named groups are the route's parameters */
  pattern: RegExp;
  handler(req: FastifyRequest, reply: FastifyReply, params: Record<string, string>): Promise<FastifyReply>;
}

/** The request's query parameters, first value of each. */
export function queryOf(req: FastifyRequest): Record<string, string | undefined> {
  const q = (req.query ?? {}) as Record<string, string | string[] | undefined>;
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(q)) out[k] = Array.isArray(v) ? v[0] : v;
  return out;
}
