/**
 * OpenAPI 3.1 document built from the route schemas as routes are registered (Fastify's
 * onRoute hook): the document cannot drift from what the server validates.
 */
import type { FastifyInstance, RouteOptions } from 'fastify';
import { PROBLEM_SCHEMA } from '../http/problem.js';

interface RouteDoc {
  method: string;
  url: string;
  schema: Record<string, unknown>;
}

export function collectOpenApi(app: FastifyInstance): () => Record<string, unknown> {
  const routes: RouteDoc[] = [];
  app.addHook('onRoute', (r: RouteOptions) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    const schema = (r.schema ?? {}) as Record<string, unknown>;
    if (schema.hide) return;
    for (const m of methods) if (m !== 'HEAD') routes.push({ method: m.toLowerCase(), url: r.url, schema });
  });
  return () => buildDocument(routes);
}

function buildDocument(routes: RouteDoc[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const op: Record<string, unknown> = {};
    const s = r.schema;
    if (s.summary) op.summary = s.summary;
    if (s.description) op.description = s.description;
    if (s.tags) op.tags = s.tags;
    op.operationId = s.operationId ?? `${r.method}${path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`;
    const parameters: unknown[] = [];
    for (const [where, key] of [
      ['path', 'params'],
      ['query', 'querystring'],
      ['header', 'headers'],
    ] as const) {
      const ps = s[key] as { properties?: Record<string, Record<string, unknown>>; required?: string[] } | undefined;
      for (const [name, sch] of Object.entries(ps?.properties ?? {})) {
        const { description, ...schema } = sch;
        parameters.push({
          name,
          in: where,
          required: where === 'path' || (ps?.required ?? []).includes(name),
          schema,
          ...(description ? { description } : {}),
        });
      }
    }
    if (parameters.length) op.parameters = parameters;
    if (s.body) op.requestBody = { required: true, content: { 'application/json': { schema: s.body } } };
    if (s.consumes)
      op.requestBody = {
        required: true,
        content: Object.fromEntries((s.consumes as string[]).map((c) => [c, { schema: { type: 'string', format: 'binary' } }])),
      };
    const responses: Record<string, unknown> = {};
    for (const [code, sch] of Object.entries((s.response ?? {}) as Record<string, Record<string, unknown>>)) {
      const { description, ...schema } = sch;
      responses[code] = { description: (description as string) ?? 'response', content: { 'application/json': { schema } } };
    }
    if (s.produces)
      responses['200'] = {
        description: 'bytes',
        content: Object.fromEntries((s.produces as string[]).map((c) => [c, { schema: { type: 'string', format: 'binary' } }])),
      };
    responses.default = { description: 'error (problem+json with a stable code)', content: { 'application/problem+json': { schema: PROBLEM_SCHEMA } } };
    op.responses = responses;
    (paths[path] ??= {})[r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Imago API', version: '1', description: 'Registry and lifecycle service for virtual machine images' },
    paths,
  };
}

declare module 'fastify' {
  interface FastifySchema {
    summary?: string;
    description?: string;
    tags?: readonly string[];
    hide?: boolean;
    consumes?: readonly string[];
    produces?: readonly string[];
    operationId?: string;
  }
}
