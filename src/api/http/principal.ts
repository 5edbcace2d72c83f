/**
 * Credentials → principal, for every door: each request is authenticated once, before its handler
 * (and before an upload body is read). Bad credentials are a 401, never silently anonymous. A door
 * names its open paths (liveness, its own description) and how its credentials are read.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ANONYMOUS, type Principal } from '../../domain/access/policy.js';
import type { RequestContext } from '../../domain/access/authorizer.js';
import { header } from './request-header.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
}

export interface PrincipalOptions {
  /** the principal for an `Authorization` header value (absent: anonymous); throws UNAUTHENTICATED */
  authenticate(authorization: string | undefined): Promise<Principal>;
  /** paths that are answered without looking at credentials */
  openPaths: readonly string[];
  /**
   * paths whose routes read the credentials themselves (they take another kind as well, e.g. an
   * upload URL's token); the hook leaves them anonymous
   */
  selfAuthenticated?: (path: string) => boolean;
  /** how the door reads the credentials (default: the Authorization header) */
  credentials?: (req: FastifyRequest) => string | undefined;
}

export function authenticateRequests(app: FastifyInstance, opts: PrincipalOptions): void {
  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0]!;
    if (opts.openPaths.includes(path) || opts.selfAuthenticated?.(path)) {
      req.principal = ANONYMOUS;
      return;
    }
    req.principal = await opts.authenticate(opts.credentials ? opts.credentials(req) : header(req, 'authorization'));
  });
}

/** The request's principal and address, as the domain wants them. */
export function ctxOf(req: FastifyRequest): RequestContext {
  return { principal: req.principal, remote: req.ip };
}
