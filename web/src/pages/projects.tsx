/** Projects with their quota usage as bars; server admins create projects, set limits and the convert-on-import target. */
import { useEffect, useState } from 'preact/hooks';
import { api, get } from '../api.js';
import { Field, ProblemBanner, UsageBar } from '../components.js';
import { bytes } from '../format.js';
import type { Session } from '../session.js';

interface Quota {
  project: string;
  limits: { images?: number; storedBytes?: number; stagingBytes?: number; imports?: number };
  usage: { images: number; storedBytes: number; stagingBytes: number; imports: number };
  /** the project's convert-on-import target: a format, "none", or null (the server's setting) */
  convertTo: string | null;
}

/** GET /api/v1/projects/{name}: the project with its limits (quota), usage and conversion policy */
interface ProjectJson {
  name: string;
  quota: Quota['limits'];
  usage: Quota['usage'];
  convertTo?: string | null;
}

const count = (n: number) => String(n);

export function ProjectsPage({ session }: { session: Session }) {
  const [quotas, setQuotas] = useState<(Quota & { role?: string })[]>();
  const [error, setError] = useState<unknown>();
  const [notice, setNotice] = useState<string>();
  const [newName, setNewName] = useState('');
  const load = async () => {
    try {
      const { projects } = await get<{ projects: { name: string; role?: string }[] }>('/projects');
      setQuotas(
        await Promise.all(
          projects.map(async (p) => {
            const r = await get<ProjectJson>(`/projects/${encodeURIComponent(p.name)}`);
            return { project: r.name, limits: r.quota, usage: r.usage, convertTo: r.convertTo ?? null, role: p.role };
          }),
        ),
      );
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => void load(), []);
  const run = async (fn: () => Promise<unknown>, done: string) => {
    setError(undefined);
    setNotice(undefined);
    try {
      await fn();
      setNotice(done);
      await load();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <>
      <h1>Projects</h1>
      <ProblemBanner error={error} />
      {notice ? (
        <p role="status" class="notice">
          {notice}
        </p>
      ) : null}
      {session.me.serverAdmin ? (
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            void run(() => api('POST', '/projects', { name: newName.trim() }), `Project ${newName} created.`).then(() => setNewName(''));
          }}
        >
          <Field label="New project" id="new-project">
            <input id="new-project" required value={newName} onInput={(e) => setNewName((e.target as HTMLInputElement).value)} />
          </Field>
          <button type="submit">Create project</button>
        </form>
      ) : null}
      {!quotas ? (
        <p aria-busy="true">Loading…</p>
      ) : quotas.length === 0 ? (
        <p>You are in no project yet.</p>
      ) : (
        quotas.map((q) => <ProjectCard key={q.project} q={q} admin={session.me.serverAdmin} run={run} />)
      )}
    </>
  );
}

function ProjectCard({ q, admin, run }: { q: Quota & { role?: string }; admin: boolean; run: (fn: () => Promise<unknown>, done: string) => Promise<void> }) {
  const id = `p-${q.project.replace(/[^\w-]/g, '_')}`;
  const [limits, setLimits] = useState({
    images: q.limits.images ?? '',
    storedGiB: q.limits.storedBytes !== undefined ? String(q.limits.storedBytes / 1024 ** 3) : '',
  });
  const [convertTo, setConvertTo] = useState(q.convertTo ?? '');
  return (
    <section class="card" aria-labelledby={`${id}-h`} data-project={q.project}>
      <h2 id={`${id}-h`}>
        {q.project} {q.role ? <span class="muted">({q.role})</span> : null}
      </h2>
      <UsageBar id={`${id}-images`} kind="images" label="Images" used={q.usage.images} limit={q.limits.images} format={count} />
      <UsageBar id={`${id}-stored`} kind="stored" label="Stored" used={q.usage.storedBytes} limit={q.limits.storedBytes} format={bytes} />
      <UsageBar id={`${id}-staging`} kind="staging" label="Uploading now" used={q.usage.stagingBytes} limit={q.limits.stagingBytes} format={bytes} />
      <UsageBar id={`${id}-imports`} kind="imports" label="Imports running" used={q.usage.imports} limit={q.limits.imports} format={count} />
      {admin ? (
        <>
          <form
            class="inline"
            onSubmit={(e) => {
              e.preventDefault();
              const images = String(limits.images).trim();
              const gib = String(limits.storedGiB).trim();
              void run(
                () =>
                  api('PUT', `/projects/${encodeURIComponent(q.project)}/quota`, {
                    images: images === '' ? null : Number(images),
                    storedBytes: gib === '' ? null : Math.round(Number(gib) * 1024 ** 3),
                  }),
                `Quota of ${q.project} saved.`,
              );
            }}
          >
            <Field label="Image limit" id={`${id}-lim-images`} hint="empty = no limit">
              <input
                id={`${id}-lim-images`}
                inputMode="numeric"
                value={limits.images}
                onInput={(e) => setLimits({ ...limits, images: (e.target as HTMLInputElement).value })}
              />
            </Field>
            <Field label="Stored limit (GiB)" id={`${id}-lim-stored`} hint="empty = no limit">
              <input
                id={`${id}-lim-stored`}
                inputMode="decimal"
                value={limits.storedGiB}
                onInput={(e) => setLimits({ ...limits, storedGiB: (e.target as HTMLInputElement).value })}
              />
            </Field>
            <button type="submit">Save quota of {q.project}</button>
          </form>
          <form
            class="inline"
            onSubmit={(e) => {
              e.preventDefault();
              void run(
                () => api('PATCH', `/projects/${encodeURIComponent(q.project)}`, { convertTo: convertTo === '' ? null : convertTo }),
                `Convert-on-import of ${q.project} saved.`,
              );
            }}
          >
            <Field label="Convert on import to" id={`${id}-convert`} hint="images uploaded or imported into this project are stored in this format">
              <select id={`${id}-convert`} value={convertTo} onChange={(e) => setConvertTo((e.target as HTMLSelectElement).value)}>
                <option value="">the server's setting</option>
                <option value="none">none (keep as uploaded)</option>
                {['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi'].map((f) => (
                  <option key={f}>{f}</option>
                ))}
              </select>
            </Field>
            <button type="submit">Save conversion of {q.project}</button>
          </form>
        </>
      ) : null}
    </section>
  );
}
