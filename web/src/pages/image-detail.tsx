/**
 * One image: its state in the three vocabularies, live progress (server events), the inspection's
 * findings and a refusal's reason, sizes and checksums, properties (edit), downloads in other
 * formats, the names other doors know it by, and the actions: enable/disable, share, permissions,
 * delete.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, authHeaders, get, problemOf, type Image } from '../api.js';
import { Confirm, Field, ProblemBanner, StateBadge } from '../components.js';
import { watchImages } from '../events.js';
import { bytes, when } from '../format.js';
import { Link, navigate } from '../router.js';
import type { Session } from '../session.js';

interface Member {
  project: string;
  status: string;
  updatedAt: string;
}

const FORMATS = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi'];
/** the distribution spec's repository and tag grammar (src/domain/registry/repository-name.ts) */
const OCI_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?$/;

export function ImageDetailPage({ id, session }: { id: string; session: Session }) {
  const [image, setImage] = useState<Image>();
  const [error, setError] = useState<unknown>();
  const [live, setLive] = useState<string>();
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [notice, setNotice] = useState<string>();

  useEffect(() => {
    get<Image>(`/images/${encodeURIComponent(id)}`).then(setImage, setError);
    // live: state and progress as the server changes them (an import, an upload, a conversion)
    return watchImages({
      image: id,
      onEvent: (e) => {
        setLive(undefined);
        setImage(e.image);
      },
      onError: setLive,
    });
  }, [id]);

  const act = async (fn: () => Promise<Image | void>, done?: string) => {
    setError(undefined);
    setNotice(undefined);
    try {
      const r = await fn();
      if (r) setImage(r);
      if (done) setNotice(done);
    } catch (e) {
      setError(e);
    }
  };

  if (!image)
    return error ? (
      <>
        <h1>Image {id}</h1>
        <ProblemBanner error={error} />
      </>
    ) : (
      <p aria-busy="true">Loading…</p>
    );
  const img = image;
  const busy = img.state === 'importing' || img.state === 'pending' || img.state === 'locked';
  return (
    <>
      <h1>{img.name || img.id}</h1>
      <p class="muted">
        <code>{img.id}</code> · project {img.project ?? '(cluster)'} · owner {img.owner ?? '—'}
      </p>
      <ProblemBanner error={error} />
      {notice ? (
        <p class="notice" role="status">
          {notice}
        </p>
      ) : null}
      <section aria-labelledby="state-h">
        <h2 id="state-h">State</h2>
        <dl class="facts">
          <dt>Imago</dt>
          <dd>
            <StateBadge state={img.state} />
          </dd>
          <dt>Glance status</dt>
          <dd>{img.glanceStatus}</dd>
          <dt>OpenNebula state</dt>
          <dd>{img.openNebulaState}</dd>
          <dt>Deckhouse phase</dt>
          <dd>{img.deckhousePhase}</dd>
        </dl>
        {img.state === 'importing' ? (
          <div class="progress" role="status" aria-live="polite">
            <label for="progress">Progress</label> <progress id="progress" max={100} value={img.progress ?? 0} />{' '}
            <span class="progress-value">{img.progress ?? 0}%</span>
            {img.stateReason ? ` — ${img.stateReason}` : ''}
          </div>
        ) : null}
        {img.state === 'error' ? (
          <div class="problem refusal" role="alert">
            <strong>Why this image is in error:</strong> <span class="state-reason">{img.stateReason ?? 'no reason recorded'}</span>
          </div>
        ) : null}
        {live ? <p class="muted">{live}</p> : null}
      </section>

      {img.inspection ? (
        <section aria-labelledby="insp-h">
          <h2 id="insp-h">Inspection</h2>
          <p>
            Detected {img.inspection.format}
            {img.inspection.subformat ? ` (${img.inspection.subformat})` : ''}
            {img.inspection.compression?.length ? `, unwrapped from ${img.inspection.compression.join(' + ')}` : ''}.
          </p>
          {img.inspection.findings.length === 0 ? (
            <p>No findings.</p>
          ) : (
            <ul class="findings">
              {img.inspection.findings.map((f, i) => (
                <li key={i} class={`finding-${f.severity}`}>
                  <strong>{f.severity}</strong> <code>{f.code}</code>: {f.message}
                </li>
              ))}
            </ul>
          )}
        </section>
      ) : null}

      <section aria-labelledby="data-h">
        <h2 id="data-h">Data</h2>
        <dl class="facts">
          <dt>Format</dt>
          <dd>{img.diskFormat ?? '—'}</dd>
          <dt>Type</dt>
          <dd>{img.type}</dd>
          <dt>Virtual size</dt>
          <dd>{img.virtualSize !== undefined ? `${bytes(img.virtualSize)} (${img.virtualSize} bytes)` : '—'}</dd>
          <dt>Stored size</dt>
          <dd>{img.storedSize !== undefined ? `${bytes(img.storedSize)} (${img.storedSize} bytes)` : '—'}</dd>
          <dt>sha256</dt>
          <dd>
            <code class="digest">{img.digest ? img.digest.replace(/^sha256:/, '') : '—'}</code>
          </dd>
          <dt>md5</dt>
          <dd>
            <code>{img.checksums.md5 ?? '—'}</code>
          </dd>
          <dt>sha512</dt>
          <dd>
            <code class="wrap">{img.checksums.sha512 ?? '—'}</code>
          </dd>
          <dt>Created</dt>
          <dd>{when(img.createdAt)}</dd>
          <dt>Updated</dt>
          <dd>{when(img.updatedAt)}</dd>
        </dl>
      </section>

      <section aria-labelledby="names-h">
        <h2 id="names-h">Names in other doors</h2>
        <dl class="facts">
          <dt>Glance (openstack image show)</dt>
          <dd>
            <code>{img.id}</code> at{' '}
            <code>
              {location.origin}/image/v2/images/{img.id}
            </code>
          </dd>
          <dt>OCI (skopeo, oras, KubeVirt)</dt>
          <dd>{ociName(img)}</dd>
        </dl>
      </section>

      {img.state === 'ready' || img.state === 'disabled' ? <Downloads img={img} onError={setError} /> : null}

      <Properties img={img} onSaved={(r) => act(async () => r, 'Properties saved.')} onError={setError} />

      <Sharing img={img} session={session} onChanged={setImage} onError={setError} />

      <section aria-labelledby="actions-h">
        <h2 id="actions-h">Actions</h2>
        <div class="actions">
          {img.state === 'ready' ? (
            <button type="button" onClick={() => act(() => api<Image>('POST', `/images/${img.id}/disable`), 'Disabled: new VMs cannot use it.')}>
              Disable
            </button>
          ) : null}
          {img.state === 'disabled' ? (
            <button type="button" onClick={() => act(() => api<Image>('POST', `/images/${img.id}/enable`), 'Enabled.')}>
              Enable
            </button>
          ) : null}
          {img.state === 'importing' ? (
            <button type="button" onClick={() => act(() => api<Image>('DELETE', `/images/${img.id}/import`), 'Import cancelled.')}>
              Cancel import
            </button>
          ) : null}
          <button type="button" class="danger" onClick={() => setConfirmDelete(true)} disabled={busy && img.state !== 'pending'}>
            Delete…
          </button>
        </div>
      </section>
      <Confirm
        open={confirmDelete}
        title={`Delete ${img.name}?`}
        confirmLabel="Delete for good"
        onCancel={() => setConfirmDelete(false)}
        onConfirm={async () => {
          setConfirmDelete(false);
          try {
            await api('DELETE', `/images/${img.id}`);
            navigate('/images');
          } catch (e) {
            setError(e);
          }
        }}
      >
        <p>
          The image <strong>{img.name}</strong> ({bytes(img.storedSize)}) and its stored variants are deleted. This cannot be undone.
        </p>
      </Confirm>
      <p>
        <Link href="/images">Back to the images</Link>
      </p>
    </>
  );
}

function ociName(img: Image): string {
  if (!img.project) return 'none: cluster-scope images are not in a project repository';
  if (!OCI_NAME.test(img.name)) return `none: the name "${img.name}" is not <repository>[:<tag>] in the OCI grammar (lower case, digits, . _ -)`;
  const [repo, tag = 'latest'] = img.name.split(':');
  return `${location.host}/${img.project}/${repo}:${tag} (containerDisk), :${tag}-artifact (oras)`;
}

function Downloads({ img, onError }: { img: Image; onError: (e: unknown) => void }) {
  const [format, setFormat] = useState(img.diskFormat ?? 'raw');
  const [busy, setBusy] = useState(false);
  const path = `/api/v1/images/${img.id}/file${format === img.diskFormat ? '' : `?format=${format}`}`;
  // the bearer token cannot ride on a plain link: fetch with it and hand the bytes to the browser
  const download = async () => {
    setBusy(true);
    try {
      const res = await fetch(path, { headers: authHeaders() });
      if (!res.ok) throw await problemOf(res);
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement('a');
      a.href = url;
      a.download = `${img.name.replace(/[^\w.-]+/g, '_')}.${format}`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      onError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="dl-h">
      <h2 id="dl-h">Download</h2>
      <div class="inline">
        <Field label="Format" id="dl-format" hint={format === img.diskFormat ? 'as stored' : 'converted on the fly (stored as a variant for next time)'}>
          <select id="dl-format" value={format} onChange={(e) => setFormat((e.target as HTMLSelectElement).value)}>
            {FORMATS.map((f) => (
              <option key={f} value={f}>
                {f}
                {f === img.diskFormat ? ' (original)' : ''}
              </option>
            ))}
          </select>
        </Field>
        <button type="button" onClick={download} disabled={busy}>
          {busy ? 'Downloading…' : 'Download'}
        </button>
      </div>
      <p class="muted">
        With curl:{' '}
        <code class="wrap">
          curl -H "Authorization: Bearer $IMAGO_TOKEN" -o disk.{format} '{location.origin}
          {path}'
        </code>
      </p>
    </section>
  );
}

function Properties({ img, onSaved, onError }: { img: Image; onSaved: (i: Image) => void; onError: (e: unknown) => void }) {
  const [rows, setRows] = useState<[string, string][]>(Object.entries(img.properties));
  // reset the rows only when the stored properties change, not on every event about the image
  // (progress, state): an unsaved edit survives those
  useEffect(() => setRows(Object.entries(img.properties)), [JSON.stringify(img.properties)]);
  const save = async (e: Event) => {
    e.preventDefault();
    const properties: Record<string, string> = {};
    for (const [k, v] of rows) if (k.trim()) properties[k.trim()] = v;
    try {
      onSaved(await api<Image>('PATCH', `/images/${img.id}`, { properties }));
    } catch (err) {
      onError(err);
    }
  };
  const setRow = (i: number, col: 0 | 1, v: string) => setRows(rows.map((r, j) => (j === i ? ((col === 0 ? [v, r[1]] : [r[0], v]) as [string, string]) : r)));
  return (
    <section aria-labelledby="props-h">
      <h2 id="props-h">Properties</h2>
      <form onSubmit={save}>
        <table class="props">
          <thead>
            <tr>
              <th scope="col">Key</th>
              <th scope="col">Value</th>
              <th scope="col">
                <span class="sr-only">Remove</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map(([k, v], i) => (
              <tr key={i}>
                <td>
                  <input aria-label={`Property ${i + 1} key`} value={k} onInput={(e) => setRow(i, 0, (e.target as HTMLInputElement).value)} />
                </td>
                <td>
                  <input aria-label={`Property ${i + 1} value`} value={v} onInput={(e) => setRow(i, 1, (e.target as HTMLInputElement).value)} />
                </td>
                <td>
                  <button type="button" onClick={() => setRows(rows.filter((_, j) => j !== i))}>
                    Remove {k || `property ${i + 1}`}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <div class="actions">
          <button type="button" onClick={() => setRows([...rows, ['', '']])}>
            Add property
          </button>
          <button type="submit">Save properties</button>
        </div>
      </form>
    </section>
  );
}

const WHO = ['owner', 'group', 'other'] as const;
const RIGHTS = [
  ['use', 4],
  ['manage', 2],
  ['admin', 1],
] as const;

function Sharing({ img, session, onChanged, onError }: { img: Image; session: Session; onChanged: (i: Image) => void; onError: (e: unknown) => void }) {
  const [members, setMembers] = useState<Member[]>();
  const [project, setProject] = useState('');
  const [visibility, setVisibility] = useState(img.visibility);
  const [mode, setMode] = useState(img.permissions);
  const [saved, setSaved] = useState<string>();
  const manage = session.me.serverAdmin || (img.project !== null && session.me.roles[img.project] !== undefined && session.me.roles[img.project] !== 'reader');
  const load = () => {
    if (manage)
      get<{ members: Member[] }>(`/images/${img.id}/members`).then(
        (r) => setMembers(r.members),
        () => setMembers(undefined),
      );
  };
  useEffect(load, [img.id]);
  // the same for the unsaved choices here: reset when the stored values change
  useEffect(() => setVisibility(img.visibility), [img.visibility]);
  useEffect(() => setMode(img.permissions), [img.permissions]);
  if (!manage) return null;
  const run = async (fn: () => Promise<unknown>, done: string) => {
    setSaved(undefined);
    try {
      await fn();
      setSaved(done);
      load();
    } catch (e) {
      onError(e);
    }
  };
  const bit = (who: number, right: number) => (Number(mode[who]) & right) !== 0;
  const toggle = (who: number, right: number) => {
    const digits = mode.split('').map(Number);
    digits[who] = digits[who]! ^ right;
    setMode(digits.join(''));
  };
  return (
    <section aria-labelledby="share-h">
      <h2 id="share-h">Sharing</h2>
      <p role="status" class="sharing-status">
        {saved ?? ''}
      </p>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => onChanged(await api<Image>('PATCH', `/images/${img.id}`, { visibility })), `Visibility is ${visibility}.`);
        }}
      >
        <Field label="Visibility" id="visibility">
          <select id="visibility" value={visibility} onChange={(e) => setVisibility((e.target as HTMLSelectElement).value as Image['visibility'])}>
            <option value="private">private (owner only)</option>
            <option value="project">project</option>
            <option value="shared">shared (project + members)</option>
            <option value="public">public</option>
          </select>
        </Field>
        <button type="submit">Save visibility</button>
      </form>
      <h3>Member projects</h3>
      {members && members.length > 0 ? (
        <ul class="members">
          {members.map((m) => (
            <li key={m.project}>
              {m.project}: <span class="member-status">{m.status}</span>{' '}
              <button
                type="button"
                onClick={() => run(() => api('DELETE', `/images/${img.id}/members/${encodeURIComponent(m.project)}`), `No longer shared with ${m.project}.`)}
              >
                Stop sharing with {m.project}
              </button>
            </li>
          ))}
        </ul>
      ) : (
        <p>Not shared with other projects.</p>
      )}
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            await api('POST', `/images/${img.id}/members`, { project: project.trim() });
            setProject('');
          }, `Offered to ${project.trim()}.`);
        }}
      >
        <Field label="Share with project" id="share-project" hint="the project sees an offer to accept">
          <input id="share-project" required value={project} onInput={(e) => setProject((e.target as HTMLInputElement).value)} />
        </Field>
        <button type="submit">Share</button>
      </form>
      <h3 id="perm-h">Permissions</h3>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => onChanged(await api<Image>('PUT', `/images/${img.id}/permissions`, { mode })), `Permissions are ${mode}.`);
        }}
      >
        <table class="matrix" aria-labelledby="perm-h">
          <thead>
            <tr>
              <td></td>
              {RIGHTS.map(([r]) => (
                <th scope="col" key={r}>
                  {r}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {WHO.map((who, w) => (
              <tr key={who}>
                <th scope="row">{who}</th>
                {RIGHTS.map(([r, b]) => (
                  <td key={r}>
                    <input type="checkbox" aria-label={`${who} may ${r}`} checked={bit(w, b)} onChange={() => toggle(w, b)} />
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
        <p class="muted">
          Mode <code>{mode}</code> (now {img.permissions}, {img.permissionsText})
        </p>
        <button type="submit">Save permissions</button>
      </form>
    </section>
  );
}
