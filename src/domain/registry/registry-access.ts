/**
 * Who may pull from and push to an OCI repository, through the one access model: a repository
 * `<project>/<repo>` belongs to its project, so readers of the project pull, writers push and
 * delete, server administrators do everything. No credentials: 401 (the door adds its challenge).
 * A caller who is not in the project — or names a project that does not exist — is told the
 * repository does not exist (404 NAME_UNKNOWN), so a private repository's existence does not leak.
 */
import type { AccessRepository } from '../access/access-repository.js';
import { needLogin, type RequestContext } from '../access/authorizer.js';
import { roleAtLeast, type Principal } from '../access/policy.js';
import { DomainError, forbidden } from '../errors.js';
import { parseRepositoryName, type RepositoryName } from './repository-name.js';

export function repositoryNotFound(name: string): DomainError {
  return new DomainError('REPOSITORY_NOT_FOUND', `repository ${name} does not exist (or you may not read it); list yours with GET /v2/_catalog`, { name });
}

export class RegistryAccess {
  constructor(private readonly access: AccessRepository) {}

  /** The repository, when the caller may pull from it. */
  async pull(ctx: RequestContext, name: string): Promise<RepositoryName> {
    const repo = parseRepositoryName(name);
    await this.member(ctx.principal, repo);
    return repo;
  }

  /** The repository, when the caller may push to (and delete in) it. */
  async push(ctx: RequestContext, name: string): Promise<RepositoryName> {
    const repo = parseRepositoryName(name);
    const p = await this.member(ctx.principal, repo);
    if (!p.serverAdmin && !roleAtLeast(p.roles.get(repo.project), 'writer')) {
      throw forbidden(`you may not push to or delete in ${name}: your role in project ${repo.project} is ${p.roles.get(repo.project)}; this needs writer`, {
        project: repo.project,
      });
    }
    return repo;
  }

  /** True when `p` may pull from `name` (a cross-repository mount's source). */
  async canPull(p: Principal, name: string): Promise<boolean> {
    try {
      await this.member(p, parseRepositoryName(name));
      return true;
    } catch (e) {
      if (e instanceof DomainError) return false;
      throw e;
    }
  }

  /** The projects whose repositories `p` may list; undefined: all of them (server admins). */
  readableProjects(ctx: RequestContext): string[] | undefined {
    if (ctx.principal.kind === 'anonymous') throw needLogin();
    return ctx.principal.serverAdmin ? undefined : [...ctx.principal.roles.keys()];
  }

  private async member(p: Principal, repo: RepositoryName): Promise<Principal> {
    if (p.kind === 'anonymous') throw needLogin();
    if (!p.serverAdmin && !p.roles.has(repo.project)) throw repositoryNotFound(repo.name);
    if (!(await this.access.project(repo.project))) throw repositoryNotFound(repo.name);
    return p;
  }
}
