/**
 * Upload with Uppy's dashboard (drag and drop, pause/resume, progress, speed, ETA). Each file
 * becomes an image first (POST /api/v1/images, in the chosen project), then its bytes go up by
 * the protocol the server offers (upload-protocol.ts): tus, resumable, or the plain streamed PUT.
 */
import Uppy, { type UppyFile } from '@uppy/core';
import Dashboard from '@uppy/dashboard';
import '@uppy/core/css/style.min.css';
import '@uppy/dashboard/css/style.min.css';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, get, type Image } from '../api.js';
import { Field, ProblemBanner } from '../components.js';
import { bytes } from '../format.js';
import { Link } from '../router.js';
import { uploadProtocol, useProtocol, type UploadProtocol } from '../upload-protocol.js';
import type { Session } from '../session.js';

interface Meta {
  image_id?: string;
  filename?: string;
  create_key?: string;
  /** localStorage key remembering this file's image while its upload is unfinished */
  pending_key?: string;
  [k: string]: unknown;
}

/** One file's transfer as this page measures it: bytes, average speed since its start, time left. */
interface Rate {
  name: string;
  sent: number;
  total: number;
  bytesPerSecond: number;
  secondsLeft?: number;
}

/** localStorage: `<prefix><project>/<name>/<size>/<mtime>` → the image an unfinished upload of that file is for */
const PENDING_PREFIX = 'imago.upload-image:';

interface Done {
  file: string;
  imageId?: string;
  ok: boolean;
  message?: string;
}

export function UploadPage({ session }: { session: Session }) {
  const target = useRef<HTMLDivElement>(null);
  const [projects, setProjects] = useState<string[]>([]);
  const [project, setProject] = useState('');
  const [type, setType] = useState('OS');
  const [visibility, setVisibility] = useState('project');
  const [protocol, setProtocol] = useState<UploadProtocol>();
  const [done, setDone] = useState<Done[]>([]);
  const [rates, setRates] = useState<Record<string, Rate>>({});
  const [error, setError] = useState<unknown>();
  // what the pre-processor reads when it creates an image (the Uppy instance outlives renders)
  const choice = useRef({ project, type, visibility });
  choice.current = { project, type, visibility };

  useEffect(() => {
    get<{ projects: { name: string; role?: string }[] }>('/projects').then((r) => {
      const names = r.projects.map((p) => p.name);
      setProjects(names);
      setProject((p) => p || names[0] || '');
    }, setError);
    void uploadProtocol().then(setProtocol);
  }, []);

  // cluster scope (no project): "project" and "shared" mean nothing there
  useEffect(() => {
    if (!project && (visibility === 'project' || visibility === 'shared')) setVisibility('private');
  }, [project, visibility]);

  useEffect(() => {
    if (!protocol || !target.current) return;
    const uppy = new Uppy<Meta, Record<string, never>>({ autoProceed: false, allowMultipleUploadBatches: true });
    uppy.use(Dashboard, {
      target: target.current,
      inline: true,
      width: '100%',
      height: 380,
      hideProgressDetails: false,
      proudlyDisplayPoweredByUppy: false,
      hideProgressAfterFinish: false,
      note:
        protocol === 'tus'
          ? 'Resumable: a dropped connection or a reload continues where it stopped.'
          : 'Streamed to the server; a dropped connection starts the file over.',
    });
    useProtocol(uppy, protocol);
    // each file becomes an image before its bytes are sent
    uppy.addPreProcessor(async (ids) => {
      for (const id of ids) {
        const file = uppy.getFile(id);
        if (file.meta.image_id) continue;
        const c = choice.current;
        // the same file added again after a reload or a crash: its unfinished image, which a
        // resumable upload continues (tus finds its upload by the file's fingerprint)
        const pendingKey = `${PENDING_PREFIX}${c.project}/${file.name}/${file.size}/${(file.data as File).lastModified ?? ''}`;
        const earlier = localStorage.getItem(pendingKey);
        if (earlier) {
          const img = await api<Image>('GET', `/images/${encodeURIComponent(earlier)}`).catch(() => undefined);
          if (img && (img.state === 'pending' || img.state === 'importing')) {
            uppy.setFileMeta(id, { image_id: img.id, filename: file.name, pending_key: pendingKey });
            continue;
          }
        }
        // one key per file added here, so a retried create gives back the same image (Uppy's
        // file id is the same for the same file added again later, so it cannot be the key)
        const key = file.meta.create_key ?? `console-${crypto.randomUUID()}`;
        uppy.setFileMeta(id, { create_key: key });
        const image = await api<Image>(
          'POST',
          '/images',
          { name: file.name, project: c.project || undefined, type: c.type, visibility: c.visibility },
          { 'idempotency-key': key },
        );
        localStorage.setItem(pendingKey, image.id);
        uppy.setFileMeta(id, { image_id: image.id, filename: file.name, pending_key: pendingKey });
      }
    });
    const settled = (file?: UppyFile<Meta, Record<string, never>>) => {
      if (file?.meta.pending_key) localStorage.removeItem(file.meta.pending_key);
    };
    // speed and time left per file (Uppy's status bar shows bytes and time left only)
    const started = new Map<string, { at: number; from: number }>();
    let lastShown = 0;
    uppy.on('upload-progress', (file, progress) => {
      if (!file) return;
      const now = performance.now();
      const sent = progress.bytesUploaded;
      const total = progress.bytesTotal ?? file.size ?? 0;
      const start = started.get(file.id) ?? { at: now, from: sent };
      started.set(file.id, start);
      if (now - lastShown < 250 && sent < total) return;
      lastShown = now;
      const seconds = (now - start.at) / 1000;
      const bytesPerSecond = seconds > 0.2 ? (sent - start.from) / seconds : 0;
      const secondsLeft = bytesPerSecond > 0 ? Math.ceil((total - sent) / bytesPerSecond) : undefined;
      setRates((r) => ({ ...r, [file.id]: { name: file.name ?? '', sent, total, bytesPerSecond, secondsLeft } }));
    });
    uppy.on('upload-success', (file?: UppyFile<Meta, Record<string, never>>) => {
      settled(file);
      if (file) setDone((d) => [...d, { file: file.name ?? '', imageId: file.meta.image_id, ok: true }]);
    });
    uppy.on('upload-error', (file, err, response) => {
      const body = (response as { body?: { detail?: string } } | undefined)?.body;
      let message = body?.detail ?? err.message;
      // xhr-upload puts the raw answer in the error; the problem's detail is what the user needs
      const raw = (err as { request?: XMLHttpRequest }).request?.responseText;
      if (raw) {
        try {
          message = (JSON.parse(raw) as { detail?: string }).detail ?? message;
        } catch {
          /* not a problem body */
        }
      }
      // the remembered image stays: a resumable upload may continue it when the file is added again
      if (file) setDone((d) => [...d, { file: file.name ?? '', imageId: file.meta.image_id, ok: false, message }]);
    });
    uppy.on('error', (err) => setError(err));
    // Uppy 6's single-file view renders its listitem in a container without role="list" (axe:
    // aria-required-parent, critical); give the container its role whenever Uppy re-renders it
    const el = target.current;
    const listRoles = new MutationObserver(() => {
      for (const files of el.querySelectorAll('.uppy-Dashboard-files:not([role])')) files.setAttribute('role', 'list');
    });
    listRoles.observe(el, { childList: true, subtree: true });
    return () => {
      listRoles.disconnect();
      uppy.destroy();
    };
  }, [protocol]);

  return (
    <>
      <h1>Upload images</h1>
      <ProblemBanner error={error} />
      <form class="filters" aria-label="New image settings" onSubmit={(e) => e.preventDefault()}>
        <Field label="Project" id="up-project">
          <select id="up-project" value={project} onChange={(e) => setProject((e.target as HTMLSelectElement).value)}>
            {session.me.serverAdmin ? <option value="">(cluster scope)</option> : null}
            {projects.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Type" id="up-type">
          <select id="up-type" value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)}>
            {['OS', 'CDROM', 'DATABLOCK', 'KERNEL', 'RAMDISK', 'CONTEXT'].map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </Field>
        <Field label="Visibility" id="up-visibility">
          <select id="up-visibility" value={visibility} onChange={(e) => setVisibility((e.target as HTMLSelectElement).value)}>
            {/* a cluster-scope image has no project to be visible to: private or public only */}
            {(project ? ['private', 'project', 'shared', 'public'] : ['private', 'public']).map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </Field>
      </form>
      <p class="muted">
        Protocol: <span id="upload-protocol">{protocol ?? '…'}</span>. The format is detected from the bytes; gz, xz, zstd and bz2 are unwrapped. The project's
        convert-on-import setting (Projects page) may store it in another format.
      </p>
      <div ref={target} class="uppy-target" />
      <div role="status" aria-label="Transfer speed">
        <ul class="rates">
          {Object.entries(rates).map(([id, r]) => (
            <li key={id}>
              {r.name}: {bytes(r.sent)} of {bytes(r.total)}
              {r.sent < r.total ? (
                <>
                  {' '}
                  at <span class="speed">{r.bytesPerSecond > 0 ? `${bytes(Math.round(r.bytesPerSecond))}/s` : '…'}</span>,{' '}
                  <span class="eta">{r.secondsLeft !== undefined ? `${r.secondsLeft} s left` : 'estimating'}</span>
                </>
              ) : (
                ' sent'
              )}
            </li>
          ))}
        </ul>
      </div>
      {done.length > 0 ? (
        <section aria-labelledby="done-h">
          <h2 id="done-h">Results</h2>
          <ul class="results">
            {done.map((d, i) => (
              <li key={i} class={d.ok ? 'ok' : 'failed'}>
                {d.file}: {d.ok ? 'stored' : <span class="upload-refusal">{d.message}</span>}{' '}
                {d.imageId ? <Link href={`/images/${d.imageId}`}>details of {d.file}</Link> : null}
              </li>
            ))}
          </ul>
        </section>
      ) : null}
    </>
  );
}
