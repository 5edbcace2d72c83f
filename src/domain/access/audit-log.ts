/**
 * The audit log: one entry for every mutating action, allowed or refused (`record`), and the
 * reading of it (`query`): server admins read everything, project admins their projects' entries.
 */
import type { AccessRepository, AuditEntry, AuditQuery } from './access-repository.js';
import { DomainError, forbidden } from '../errors.js';
import type { Image } from '../images/image.js';
import type { Authorizer, RequestContext } from './authorizer.js';

export interface AuditTarget {
  target?: string;
  project?: string;
  detail?: Record<string, unknown>;
}

export class AuditLog {
  constructor(
    private readonly access: AccessRepository,
    private readonly authz: Authorizer,
  ) {}

  /**
   * Runs a mutating action and records it, allowed or refused. `note(image)` lets the action name
   * the project once it has loaded the target.
   */
  async record<T>(ctx: RequestContext, action: string, t: AuditTarget, fn: (note: (x: Image | Record<string, unknown>) => void) => Promise<T>): Promise<T> {
    let project = t.project;
    let detail = t.detail;
    const note = (x: Image | Record<string, unknown>) => {
      if ('visibility' in x && 'state' in x) project ??= (x as Image).project;
      else detail = { ...detail, ...x };
    };
    let result = 'ok';
    try {
      return await fn(note);
    } catch (e) {
      result = e instanceof DomainError ? e.code : 'INTERNAL';
      if (e instanceof DomainError && typeof e.details.project === 'string') project ??= e.details.project;
      throw e;
    } finally {
      await this.access.audit({ actor: ctx.principal.label, action, target: t.target, project, remote: ctx.remote, result, detail }).catch(() => undefined);
    }
  }

  /** Server admins read everything; project admins read their projects' entries. */
  async query(ctx: RequestContext, q: AuditQuery): Promise<AuditEntry[]> {
    const p = this.authz.authenticated(ctx);
    if (!p.serverAdmin) {
      if (!q.project) throw forbidden('only server administrators read the whole audit log; project admins add ?project=NAME');
      if (p.roles.get(q.project) !== 'admin') throw forbidden(`reading the audit log of project ${q.project} needs admin there`);
    }
    return this.access.auditLog(q);
  }
}
