/**
 * The QUOTA_EXCEEDED refusal, worded once for every quota check of the image concern (image count
 * at create; staging, stored bytes and concurrent imports when an ingest starts and commits).
 */
import { DomainError } from '../errors.js';

const QUOTA_WORDS: Record<string, string> = {
  images: 'image count',
  storedBytes: 'stored bytes',
  stagingBytes: 'bytes in staging (uploads running now)',
  imports: 'concurrent imports',
};

export function quotaExceeded(project: string, limit: string, max: number, used: number, adding: number | undefined, fix: string): DomainError {
  const bytes = limit.endsWith('Bytes');
  const fmt = (n: number) => (bytes ? `${n} bytes` : String(n));
  const add = adding === undefined ? 'the upload' : `adding ${fmt(adding)}`;
  return new DomainError(
    'QUOTA_EXCEEDED',
    `project ${project} is over its ${QUOTA_WORDS[limit] ?? limit} quota: ${add} to ${fmt(used)} in use exceeds the limit of ${fmt(max)}; ${fix} (see "imago quota show ${project}")`,
    { project, limit, max, used, adding },
  );
}
