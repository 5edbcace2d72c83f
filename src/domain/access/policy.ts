/**
 * The access policy: who may do what to which image. Pure functions over a principal and an
 * image's ownership facts; every door (REST now, Glance/OCI/console later) asks here through
 * the `Authorizer` (`authorizer.ts`), so there is exactly one answer.
 *
 * Model (docs/ACCESS.md has the anchors side by side):
 * - A *principal* has a role per project (`reader` < `writer` < `admin`) or is a server admin.
 * - An image belongs to one project (or to the cluster scope: `project` absent, server admins
 *   only unless public) and has an owner
 *   (the user who created it), a visibility and OpenNebula-style permission bits
 *   (owner/group/other × use/manage/admin).
 * - Rights: `use` (list, show, download), `manage` (upload, import, update, delete, disable,
 *   enable), `admin` (share, chmod, change visibility).
 */

export const ROLES = ['reader', 'writer', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/**
 * `community` (Glance's): every signed-in principal may use the image, but listings show it only to
 * its project or when asked for community images (`visibility=community`).
 */
export const VISIBILITIES = ['private', 'project', 'shared', 'public', 'community'] as const;
export type Visibility = (typeof VISIBILITIES)[number];

export const MEMBER_STATUSES = ['pending', 'accepted', 'rejected'] as const;
export type MemberStatus = (typeof MEMBER_STATUSES)[number];

export type Right = 'use' | 'manage' | 'admin';

export interface Principal {
  /** `anonymous`, a token, or an OIDC identity */
  readonly kind: 'anonymous' | 'token' | 'oidc';
  /** the user acting (for tokens: the user the token was issued to) */
  readonly user?: string;
  /** human label for the audit log: "alice (token ci-push)" */
  readonly label: string;
  readonly serverAdmin: boolean;
  /** effective role per project name */
  readonly roles: ReadonlyMap<string, Role>;
  readonly tokenId?: string;
}

export const ANONYMOUS: Principal = { kind: 'anonymous', label: 'anonymous', serverAdmin: false, roles: new Map() };

/** The ownership facts the policy needs about one image. */
export interface ImageOwnership {
  /** owning project; absent = cluster scope (server admins only, unless public) */
  readonly project?: string;
  readonly owner?: string;
  readonly visibility: Visibility;
  /** 9 bits, OpenNebula order: owner(use,manage,admin) group(...) other(...) — e.g. 0o660 */
  readonly perms: number;
}

export const USE = 4;
export const MANAGE = 2;
export const ADMIN = 1;
const BIT: Record<Right, number> = { use: USE, manage: MANAGE, admin: ADMIN };

export function roleAtLeast(role: Role | undefined, min: Role): boolean {
  return role !== undefined && ROLES.indexOf(role) >= ROLES.indexOf(min);
}

export function maxRole(a: Role | undefined, b: Role): Role {
  return a === undefined || ROLES.indexOf(b) > ROLES.indexOf(a) ? b : a;
}

/** A principal's only project, when it has exactly one (a project token). */
export function defaultProject(p: Principal): string | undefined {
  return p.roles.size === 1 ? [...p.roles.keys()][0] : undefined;
}

/**
 * The rights `p` has on an image, given the member status of p's projects (the best one: an
 * accepted membership in any of p's projects counts).
 *
 * 1. Server admins: everything.
 * 2. Cluster scope (no project): nobody but server admins — there is no project whose members
 *    could be meant — except that a public one is used by everyone, like any public image.
 * 3. Project admins of the owning project: everything (they can always repair the bits).
 * 4. Other members of the owning project: the owner class (if p created it) or the group class
 *    of the permission bits, capped by role — reader: use; writer: use, manage (+ admin for
 *    the owner class, as OpenNebula's owner with the A bit).
 * 5. Anyone else: use, if the image is shared with one of p's projects and that project
 *    accepted, or if the image is public (anonymous included), or community (signed in).
 */
export function rightsOn(p: Principal, img: ImageOwnership, memberStatus?: MemberStatus): Set<Right> {
  const out = new Set<Right>();
  if (p.serverAdmin) return new Set(['use', 'manage', 'admin']);
  if (img.project === undefined) {
    if (img.visibility === 'public') out.add('use');
    return out;
  }
  const role = p.roles.get(img.project);
  if (role === 'admin') return new Set(['use', 'manage', 'admin']);
  if (role) {
    const ownerClass = p.user !== undefined && img.owner === p.user;
    const bits = (img.perms >> (ownerClass ? 6 : 3)) & 7;
    const cap = role === 'writer' ? USE | MANAGE | (ownerClass ? ADMIN : 0) : USE;
    for (const r of ['use', 'manage', 'admin'] as const) if (bits & cap & BIT[r]) out.add(r);
    // a right without use is meaningless: manage implies seeing the image
    if (out.size) out.add('use');
  }
  if (img.visibility === 'shared' && memberStatus === 'accepted') out.add('use');
  if (img.visibility === 'public' || (img.perms & USE) !== 0) out.add('use');
  if (img.visibility === 'community' && p.kind !== 'anonymous') out.add('use');
  return out;
}

// ---- permission bits ---------------------------------------------------------------------

export const DEFAULT_PERMS = 0o660;

/** "640" → 0o640; refuses what the model cannot mean, saying why. */
export function parseMode(mode: string): number {
  if (!/^[0-7]{3}$/.test(mode)) throw new TypeError(`mode "${mode}" must be three octal digits (owner, group, other), e.g. 640`);
  const bits = parseInt(mode, 8);
  const other = bits & 7;
  if (other !== 0 && other !== USE) {
    throw new TypeError(`mode ${mode}: "other" may only have use (4) — nobody outside the project manages or administers an image; use 640 or 644`);
  }
  for (const [name, shift] of [
    ['owner', 6],
    ['group', 3],
  ] as const) {
    const d = (bits >> shift) & 7;
    if (d !== 0 && (d & USE) === 0) throw new TypeError(`mode ${mode}: the ${name} digit ${d} grants manage/admin without use (4); add 4`);
  }
  return bits;
}

/** Cluster-scope images (no project) are private or public: there is no group to share with. */
export const CLUSTER_VISIBILITIES: readonly Visibility[] = ['private', 'public'];

/** The permission bits of a cluster-scope image: owner all; other use when public; no group. */
export function clusterMode(v: Visibility): number {
  return v === 'public' ? 0o604 : 0o600;
}

export function formatMode(perms: number): string {
  return perms.toString(8).padStart(3, '0');
}

/** OpenNebula's `PERMISSIONS` view: "um-u--u--" style triplets. */
export function modeTriplets(perms: number): string {
  let s = '';
  for (const shift of [6, 3, 0]) {
    const d = (perms >> shift) & 7;
    s += `${d & USE ? 'u' : '-'}${d & MANAGE ? 'm' : '-'}${d & ADMIN ? 'a' : '-'}`;
  }
  return s;
}

/** The visibility implied by permission bits (chmod), keeping `shared` when the group may use. */
export function visibilityForMode(perms: number, current: Visibility): Visibility {
  if (perms & USE) return 'public';
  if ((perms >> 3) & USE) return current === 'shared' || current === 'community' ? current : 'project';
  return 'private';
}

/** The permission bits implied by a visibility change: group/other use bits follow, manage bits stay. */
export function modeForVisibility(perms: number, v: Visibility): number {
  const owner = perms & 0o700 || 0o600;
  let group = perms & 0o070;
  switch (v) {
    case 'private':
      return owner;
    case 'project':
    case 'shared':
    case 'community':
      group |= USE << 3;
      return owner | group;
    case 'public':
      group |= USE << 3;
      return owner | group | USE;
  }
}
