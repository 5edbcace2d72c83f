/**
 * OCI repository names (distribution spec v1.1, "Pulling manifests": the `<name>` grammar) and how
 * they map onto Imago: the first path component is the project, the rest names the repository in
 * it (`<project>/<repo>[/<more>]`). References are tags or digests.
 */
import { DomainError } from '../errors.js';
import { PROJECT_NAME } from '../access/access-repository.js';
import { isDigest, type Digest } from '../../store/blob-store.js';

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** the spec's limit for a name (in practice clients put name + reference in 255 characters) */
export const MAX_NAME_LENGTH = 255;

export interface RepositoryName {
  /** the whole name, `<project>/<repo>` */
  name: string;
  project: string;
}

/** A repository name, or NAME_INVALID saying what is wrong. */
export function parseRepositoryName(name: string): RepositoryName {
  if (name.length > MAX_NAME_LENGTH || !NAME.test(name)) {
    throw new DomainError(
      'NAME_INVALID',
      `repository name "${name.slice(0, 100)}" is not valid: lower-case letters and digits separated by ".", "_", "__" or "-", path components joined by "/", at most ${MAX_NAME_LENGTH} characters`,
      { name: name.slice(0, 300) },
    );
  }
  const slash = name.indexOf('/');
  const project = slash < 0 ? '' : name.slice(0, slash);
  if (slash < 0 || !PROJECT_NAME.test(project)) {
    throw new DomainError(
      'NAME_INVALID',
      `repository name "${name}" must start with its project: <project>/<repository> (e.g. myproject/${name}); a project name is at most 64 characters`,
      { name },
    );
  }
  return { name, project };
}

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/** A manifest reference: a tag, or a sha256 digest (other algorithms are refused by name). */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) return { kind: 'digest', digest: parseDigest(ref) };
  if (!TAG.test(ref)) {
    throw new DomainError(
      'MANIFEST_INVALID',
      `tag "${ref.slice(0, 140)}" is not valid: letters, digits, "_", "." and "-", not starting with "." or "-", at most 128 characters`,
      {
        tag: ref.slice(0, 200),
      },
    );
  }
  return { kind: 'tag', tag: ref };
}

export function parseDigest(s: string): Digest {
  if (isDigest(s)) return s;
  const algorithm = s.split(':')[0] ?? '';
  throw new DomainError(
    'DIGEST_INVALID',
    /^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(s) && algorithm !== 'sha256'
      ? `digest algorithm "${algorithm.slice(0, 20)}" is not supported here; use sha256`
      : `"${s.slice(0, 100)}" is not a digest: expected sha256:<64 lower-case hex digits>`,
    { digest: s.slice(0, 200) },
  );
}
