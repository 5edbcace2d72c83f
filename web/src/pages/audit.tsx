/** The audit log, newest first, with the API's filters and its "next" paging. */
import { useEffect, useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { Field, ProblemBanner } from '../components.js';
import { when } from '../format.js';
import type { Session } from '../session.js';

interface Entry {
  id: string;
  at: string;
  actor: string;
  action: string;
  target?: string;
  project?: string;
  result: string;
  detail?: unknown;
}

export function AuditPage({ session }: { session: Session }) {
  const adminOf = Object.entries(session.me.roles).find(([, r]) => r === 'admin')?.[0] ?? '';
  const [filters, setFilters] = useState({ actor: '', action: '', project: session.me.serverAdmin ? '' : adminOf, target: '', since: '' });
  const [applied, setApplied] = useState(filters);
  const [pages, setPages] = useState<(string | undefined)[]>([undefined]);
  const [data, setData] = useState<{ entries: Entry[]; next?: string }>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    setError(undefined);
    const f = applied;
    get<{ entries: Entry[]; next?: string }>(
      `/audit${query({ ...f, since: f.since ? new Date(`${f.since}T00:00:00Z`).toISOString() : undefined, limit: '50', before: pages[pages.length - 1] })}`,
    ).then(setData, setError);
  }, [applied, pages]);
  const set = (k: keyof typeof filters) => (e: Event) => setFilters({ ...filters, [k]: (e.target as HTMLInputElement).value });
  return (
    <>
      <h1>Audit log</h1>
      {!session.me.serverAdmin ? <p class="muted">Project admins see their project's entries (set the project filter).</p> : null}
      <form
        class="filters"
        aria-label="Filter the audit log"
        onSubmit={(e) => {
          e.preventDefault();
          setPages([undefined]);
          setApplied(filters);
        }}
      >
        <Field label="Actor" id="a-actor">
          <input id="a-actor" value={filters.actor} onInput={set('actor')} />
        </Field>
        <Field label="Action" id="a-action" hint="e.g. image.delete">
          <input id="a-action" value={filters.action} onInput={set('action')} />
        </Field>
        <Field label="Project" id="a-project">
          <input id="a-project" value={filters.project} onInput={set('project')} />
        </Field>
        <Field label="Target" id="a-target">
          <input id="a-target" value={filters.target} onInput={set('target')} />
        </Field>
        <Field label="Since" id="a-since">
          <input id="a-since" type="date" value={filters.since} onInput={set('since')} />
        </Field>
        <div class="field">
          <button type="submit">Apply filters</button>
        </div>
      </form>
      <ProblemBanner error={error} />
      {data ? (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Audit entries</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Actor</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Project</th>
                <th scope="col">Result</th>
                <th scope="col">Detail</th>
              </tr>
            </thead>
            <tbody>
              {data.entries.map((e) => (
                <tr key={e.id}>
                  <td>{when(e.at)}</td>
                  <td>{e.actor}</td>
                  <td>{e.action}</td>
                  <td>{e.target ?? '—'}</td>
                  <td>{e.project ?? '—'}</td>
                  <td>{e.result}</td>
                  <td>
                    <code class="wrap">{e.detail === undefined || e.detail === null ? '' : JSON.stringify(e.detail).slice(0, 300)}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      <div class="pager">
        <button type="button" disabled={pages.length <= 1} onClick={() => setPages(pages.slice(0, -1))}>
          Newer entries
        </button>
        <button type="button" disabled={!data?.next} onClick={() => setPages([...pages, data!.next])}>
          Older entries
        </button>
      </div>
    </>
  );
}
