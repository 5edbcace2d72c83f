/** Import from an http(s) URL: the server fetches it as a background job; the details page shows its live progress. */
import { useEffect, useState } from 'preact/hooks';
import { api, get, type Image } from '../api.js';
import { Field, ProblemBanner } from '../components.js';
import { navigate } from '../router.js';
import type { Session } from '../session.js';

export function ImportPage({ session }: { session: Session }) {
  const [projects, setProjects] = useState<string[]>([]);
  const [form, setForm] = useState({ url: '', name: '', project: '', type: 'OS' });
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    get<{ projects: { name: string }[] }>('/projects').then((r) => {
      setProjects(r.projects.map((p) => p.name));
      setForm((f) => ({ ...f, project: f.project || r.projects[0]?.name || '' }));
    }, setError);
  }, []);
  const set = (k: keyof typeof form) => (e: Event) => setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    let created: Image | undefined;
    try {
      const name = form.name.trim() || decodeURIComponent(new URL(form.url).pathname.split('/').pop() || 'imported');
      created = await api<Image>('POST', '/images', { name, project: form.project || undefined, type: form.type });
      await api<Image>('POST', `/images/${created.id}/import`, { url: form.url.trim() });
      navigate(`/images/${created.id}`);
    } catch (err) {
      // the import was refused (URL policy, quota): the empty image made for it goes too
      if (created) await api('DELETE', `/images/${created.id}`).catch(() => undefined);
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <h1>Import from a URL</h1>
      <ProblemBanner error={error} />
      <form onSubmit={submit} class="stack">
        <Field label="URL" id="imp-url" hint="http or https; the server fetches it (its URL policy applies)">
          <input id="imp-url" type="url" required value={form.url} onInput={set('url')} placeholder="https://cloud-images.ubuntu.com/…/disk.img" />
        </Field>
        <Field label="Name" id="imp-name" hint="default: the file name of the URL">
          <input id="imp-name" value={form.name} onInput={set('name')} />
        </Field>
        <Field label="Project" id="imp-project">
          <select id="imp-project" value={form.project} onChange={set('project')}>
            {session.me.serverAdmin ? <option value="">(cluster scope)</option> : null}
            {projects.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </Field>
        <Field label="Type" id="imp-type">
          <select id="imp-type" value={form.type} onChange={set('type')}>
            {['OS', 'CDROM', 'DATABLOCK', 'KERNEL', 'RAMDISK', 'CONTEXT'].map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </Field>
        <div>
          <button type="submit" disabled={busy}>
            Start import
          </button>
        </div>
      </form>
    </>
  );
}
