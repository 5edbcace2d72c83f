/**
 * The access model's repository port: projects and their quota limits, users, groups, role grants,
 * API tokens (hashed), OIDC issuers and claim rules, and the audit log. The domain calls these
 * methods; the adapter (db/access-repository.ts) stores them. No policy here — `access/policy.ts` decides,
 * `access/authorizer.ts` enforces.
 */
import type { Role } from './policy.js';

export interface Project {
  name: string;
  description?: string;
  createdAt: Date;
  quota: QuotaLimits;
}

/** Limits per project; absent = unlimited. */
export interface QuotaLimits {
  images?: number;
  storedBytes?: number;
  stagingBytes?: number;
  imports?: number;
}

export interface Grant {
  project: string;
  subjectKind: 'user' | 'group';
  subject: string;
  role: Role;
}

export interface TokenRecord {
  id: string;
  name: string;
  user: string;
  project?: string;
  role: Role | 'server-admin';
  createdAt: Date;
  createdBy: string;
  expiresAt?: Date;
  revokedAt?: Date;
  lastUsedAt?: Date;
  secretHash: string;
}

export interface OidcIssuer {
  issuer: string;
  audience: string;
  jwksUrl?: string;
  usernameClaim: string;
}

export interface ClaimRule {
  id: string;
  issuer?: string;
  claim: string;
  /** exact value, or with one `{project}` placeholder */
  value: string;
  project?: string;
  role?: Role;
  group?: string;
}

export interface AuditEntry {
  id: string;
  at: Date;
  actor: string;
  action: string;
  target?: string;
  project?: string;
  remote?: string;
  result: string;
  detail?: Record<string, unknown>;
}

export interface AuditQuery {
  actor?: string;
  action?: string;
  project?: string;
  target?: string;
  since?: Date;
  limit: number;
  /** entries strictly older than this id's entry (paging backwards) */
  before?: { at: number; id: string };
}

export const PROJECT_NAME = /^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$/;

export interface AccessRepository {
  /** INVALID_REQUEST for a name that is not PROJECT_NAME; CONFLICT when it exists */
  createProject(name: string, description?: string): Promise<Project>;
  project(name: string): Promise<Project | undefined>;
  projects(): Promise<Project[]>;
  deleteProject(name: string): Promise<boolean>;
  /** undefined = unchanged, null = unlimited; answers the project after the change (undefined: no such project) */
  setQuota(name: string, q: { [K in keyof QuotaLimits]?: number | null }): Promise<Project | undefined>;

  /** Creates the user if absent; `serverAdmin` true also promotes an existing one. */
  ensureUser(name: string, serverAdmin?: boolean): Promise<void>;
  user(name: string): Promise<{ name: string; serverAdmin: boolean; createdAt: Date } | undefined>;
  users(): Promise<{ name: string; serverAdmin: boolean; createdAt: Date }[]>;
  /** Also drops its group memberships and grants and revokes its tokens. */
  deleteUser(name: string): Promise<boolean>;
  createGroup(name: string, description?: string): Promise<void>;
  groups(): Promise<{ name: string; description?: string; members: string[] }[]>;
  groupExists(name: string): Promise<boolean>;
  deleteGroup(name: string): Promise<boolean>;
  addGroupMember(group: string, user: string): Promise<void>;
  removeGroupMember(group: string, user: string): Promise<boolean>;
  /** Sets (or replaces) the subject's role in the project. */
  grant(g: Grant): Promise<void>;
  revokeGrant(project: string, subjectKind: 'user' | 'group', subject: string): Promise<boolean>;
  grants(project?: string): Promise<Grant[]>;
  /** A user's roles from direct grants and from the groups it is in (static and `extraGroups`). */
  rolesOf(user: string, extraGroups?: readonly string[]): Promise<Map<string, Role>>;

  insertToken(t: TokenRecord): Promise<void>;
  token(id: string): Promise<TokenRecord | undefined>;
  tokens(filter?: { user?: string; project?: string; includeRevoked?: boolean }): Promise<TokenRecord[]>;
  revokeToken(id: string): Promise<boolean>;
  /** `at`: milliseconds since the epoch */
  touchToken(id: string, at: number): Promise<void>;

  /** Adds or replaces the issuer. */
  putIssuer(i: OidcIssuer): Promise<void>;
  issuers(): Promise<OidcIssuer[]>;
  deleteIssuer(issuer: string): Promise<boolean>;
  addRule(rule: Omit<ClaimRule, 'id'>): Promise<ClaimRule>;
  rules(): Promise<ClaimRule[]>;
  deleteRule(id: string): Promise<boolean>;

  audit(e: Omit<AuditEntry, 'id' | 'at'> & { at?: Date }): Promise<void>;
  /** newest first */
  auditLog(q: AuditQuery): Promise<AuditEntry[]>;
}
