/**
 * The one switch between the two ways bytes go up. tus 1.0.0 at /api/v1/uploads (resumable: a
 * dropped connection, a reload or a server restart continues from the server's offset) when the
 * server has it; otherwise the plain streamed `PUT /api/v1/images/{id}/file`. Both go through the
 * server's one ingest path; the image is always created first (POST /api/v1/images) and named in
 * the upload (tus metadata `image_id`).
 */
import type Uppy from '@uppy/core';
import Tus from '@uppy/tus';
import XHRUpload from '@uppy/xhr-upload';
import { authHeaders } from './api.js';

export type UploadProtocol = 'tus' | 'plain';

export const TUS_ENDPOINT = '/api/v1/uploads';

/** tus when the server answers the tus OPTIONS discovery (Tus-Version), plain when it has no such route (404). */
export async function uploadProtocol(): Promise<UploadProtocol> {
  try {
    const res = await fetch(TUS_ENDPOINT, { method: 'OPTIONS', headers: { 'tus-resumable': '1.0.0', ...authHeaders() } });
    return res.ok && res.headers.get('tus-version') ? 'tus' : 'plain';
  } catch {
    return 'plain';
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function useProtocol(uppy: Uppy<any, any>, protocol: UploadProtocol): void {
  if (protocol === 'tus') {
    uppy.use(Tus, {
      endpoint: TUS_ENDPOINT,
      headers: () => authHeaders(),
      // the whole file in one PATCH (tus-js-client's default chunkSize: Infinity): the server keeps
      // and syncs the bytes of a cut PATCH, so a resume re-sends only what was in flight, and
      // nothing waits between requests. 64 MiB requests each waited for the server's fdatasync of
      // their part before the next began (issue 12's benchmark: 0.34 of curl's throughput).
      chunkSize: Infinity,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      allowedMetaFields: ['image_id', 'filename'],
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
    });
  } else {
    uppy.use(XHRUpload, {
      endpoint: (file) => `/api/v1/images/${encodeURIComponent(String((Array.isArray(file) ? file[0] : file)?.meta.image_id))}/file`,
      method: 'PUT',
      formData: false,
      headers: () => ({ ...authHeaders(), 'content-type': 'application/octet-stream' }),
      // the server answers once the bytes are stored and checked, which for a big image takes a while
      timeout: 0,
      limit: 2,
    });
  }
}
