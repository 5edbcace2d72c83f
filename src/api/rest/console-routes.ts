/**
 * What the web console asks the REST API for that no other resource gives: how to sign in
 * (`GET /console`, open: the sign-in page is shown before any credentials exist) and what GC would
 * reclaim now (`GET /gc`, server admins: the dry run of `imago gc --dry-run`).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Authorizer } from '../../domain/access/authorizer.js';
import type { GcPlan } from '../../domain/images/gc.js';
import { ctxOf } from '../http/principal.js';

/** The console's sign-in settings, as the server's configuration gives them. */
export interface ConsoleSettings {
  /** OIDC sign-in (authorization code + PKCE, a public client); absent = Imago tokens only */
  oidc?: { issuer: string; clientId: string; scopes: string; bearer: 'access_token' | 'id_token' };
}

export interface ConsoleRoutesOptions {
  authorizer: Authorizer;
  settings: ConsoleSettings;
  /** the GC plan as of now, nothing deleted */
  gcPlan: () => Promise<GcPlan>;
}

/** Candidates listed in the GC answer (the totals count all of them). */
const GC_LISTED = 200;

export const CONSOLE_CONFIG_PATH = '/console';

export const consoleRoutes: FastifyPluginAsyncTypebox<ConsoleRoutesOptions> = async (app, { authorizer, settings, gcPlan }) => {
  app.get(
    CONSOLE_CONFIG_PATH,
    { schema: { summary: 'What the web console needs before sign-in (OIDC issuer and client, if any)', tags: ['meta'] } },
    async () => ({
      oidc: settings.oidc ?? null,
      doors: { rest: '/api/v1', oci: '/v2/', glance: '/image' },
    }),
  );

  app.get('/gc', { schema: { summary: 'What garbage collection would reclaim now (dry run; server admins)', tags: ['meta'] } }, async (req) => {
    authorizer.serverAdmin(ctxOf(req), 'may see what garbage collection would reclaim');
    const plan = await gcPlan();
    return {
      totalBytes: plan.totalBytes,
      usedBytes: plan.usedBytes,
      reclaimableBytes: plan.reclaimableBytes,
      youngBytes: plan.youngBytes,
      graceMs: plan.graceMs,
      youngReclaimableFrom: plan.youngReclaimableFrom?.toISOString(),
      youngReclaimableBy: plan.youngReclaimableBy?.toISOString(),
      candidateCount: plan.candidates.length,
      candidates: plan.candidates.slice(0, GC_LISTED).map((c) => ({ digest: c.digest, sizeBytes: c.sizeBytes, committedAt: c.committedAt.toISOString() })),
    };
  });
};
