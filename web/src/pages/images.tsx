/**
 * The image list: the API's own filters, sort and cursor paging (GET /api/v1/images?limit&cursor),
 * so a page costs the same at 100k images as at 10; and the offers other projects made to yours
 * (shared images still pending), to accept or reject.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, get, query, type Image } from '../api.js';
import { Field, ProblemBanner, StateBadge } from '../components.js';
import { bytes, when } from '../format.js';
import { Link } from '../router.js';
import type { Session } from '../session.js';

interface Filters {
  search: string;
  project: string;
  type: string;
  diskFormat: string;
  state: string;
  visibility: string;
  property: string;
  sort: string;
  limit: string;
}

const EMPTY: Filters = { search: '', project: '', type: '', diskFormat: '', state: '', visibility: '', property: '', sort: 'createdAt:desc', limit: '25' };

function listQuery(f: Filters, cursor?: string): string {
  const name = f.search.trim();
  return query({
    name: name ? (name.endsWith('*') ? name : `${name}*`) : undefined,
    project: f.project || undefined,
    type: f.type || undefined,
    diskFormat: f.diskFormat || undefined,
    state: f.state || undefined,
    visibility: f.visibility || undefined,
    property: f.property.trim() || undefined,
    sort: f.sort,
    limit: f.limit,
    cursor,
  });
}

export function ImagesPage({ session }: { session: Session }) {
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [applied, setApplied] = useState<Filters>(EMPTY);
  // the cursors of the pages before this one (Previous goes back through them)
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<{ images: Image[]; nextCursor?: string }>();
  const [projects, setProjects] = useState<string[]>([]);
  const [error, setError] = useState<unknown>();
  const [offers, setOffers] = useState<Image[]>([]);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    get<{ projects: { name: string }[] }>('/projects').then((r) => setProjects(r.projects.map((p) => p.name)), setError);
  }, []);
  const loadOffers = () => {
    if (Object.keys(session.me.roles).length === 0) return;
    get<{ images?: Image[] }>(`/images${query({ memberStatus: 'pending', limit: '50' })}`).then((r) => setOffers(r.images ?? []), setError);
  };
  useEffect(loadOffers, []);
  useEffect(() => {
    setError(undefined);
    // the rows of the previous query are not this query's answer: "Loading…" until it comes
    setPage(undefined);
    get<{ images?: Image[]; nextCursor?: string }>(`/images${listQuery(applied, cursor)}`).then(
      (r) => setPage({ images: r.images ?? [], nextCursor: r.nextCursor }),
      setError,
    );
  }, [applied, cursor]);

  const set = (k: keyof Filters) => (e: Event) => setFilters({ ...filters, [k]: (e.target as HTMLInputElement).value });
  const apply = (e: Event) => {
    e.preventDefault();
    setCursors([undefined]);
    setApplied(filters);
  };
  const answer = async (img: Image, status: 'accepted' | 'rejected') => {
    // the offer went to one of the caller's projects: answer for the one that has it
    let last: unknown;
    for (const p of Object.keys(session.me.roles)) {
      try {
        await api('PUT', `/images/${img.id}/members/${encodeURIComponent(p)}`, { status });
        last = undefined;
        break;
      } catch (e) {
        last = e;
      }
    }
    if (last) setError(last);
    loadOffers();
    setApplied({ ...applied });
  };
  const select = (k: keyof Filters, label: string, options: string[]) => (
    <Field label={label} id={`f-${k}`}>
      <select id={`f-${k}`} value={filters[k]} onChange={set(k)}>
        <option value="">any</option>
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </select>
    </Field>
  );
  return (
    <>
      <h1>Images</h1>
      <ProblemBanner error={error} />
      {offers.length > 0 ? (
        <section aria-labelledby="offers-h">
          <h2 id="offers-h">Shared with your projects, waiting for your answer</h2>
          <ul class="offers">
            {offers.map((o) => (
              <li key={o.id}>
                <Link href={`/images/${o.id}`}>{o.name}</Link> from project {o.project ?? '(cluster)'}{' '}
                <button type="button" onClick={() => answer(o, 'accepted')}>
                  Accept {o.name}
                </button>{' '}
                <button type="button" onClick={() => answer(o, 'rejected')}>
                  Reject {o.name}
                </button>
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      <form class="filters" onSubmit={apply} aria-label="Filter images">
        <Field label="Search by name" id="f-search" hint="a name or its beginning">
          <input id="f-search" type="search" value={filters.search} onInput={set('search')} />
        </Field>
        {select('project', 'Project', projects)}
        {select('type', 'Type', ['OS', 'CDROM', 'DATABLOCK', 'KERNEL', 'RAMDISK', 'CONTEXT'])}
        {select('diskFormat', 'Format', ['raw', 'qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'qed', 'iso', 'ova'])}
        {select('state', 'State', ['pending', 'importing', 'ready', 'disabled', 'error', 'locked'])}
        {select('visibility', 'Visibility', ['private', 'project', 'shared', 'public'])}
        <Field label="Property" id="f-property" hint="key=value">
          <input id="f-property" value={filters.property} onInput={set('property')} placeholder="os_distro=ubuntu" />
        </Field>
        <Field label="Sort" id="f-sort">
          <select id="f-sort" value={filters.sort} onChange={set('sort')}>
            <option value="createdAt:desc">newest first</option>
            <option value="createdAt:asc">oldest first</option>
            <option value="name:asc">name A–Z</option>
            <option value="name:desc">name Z–A</option>
            <option value="updatedAt:desc">recently changed</option>
            <option value="storedSize:desc">largest stored</option>
            <option value="virtualSize:desc">largest virtual</option>
          </select>
        </Field>
        <Field label="Per page" id="f-limit">
          <select id="f-limit" value={filters.limit} onChange={set('limit')}>
            {['10', '25', '50', '100'].map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </Field>
        <div class="field">
          <button type="submit">Apply filters</button>
        </div>
      </form>
      {page ? (
        page.images.length === 0 ? (
          <p>
            No images match. <Link href="/upload">Upload one</Link> or <Link href="/import">import one from a URL</Link>.
          </p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="sr-only">Images, page {cursors.length}</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Project</th>
                  <th scope="col">State</th>
                  <th scope="col">Format</th>
                  <th scope="col">Type</th>
                  <th scope="col">Visibility</th>
                  <th scope="col">Stored</th>
                  <th scope="col">Virtual</th>
                  <th scope="col">Created</th>
                </tr>
              </thead>
              <tbody>
                {page.images.map((img) => (
                  <tr key={img.id}>
                    <td>
                      <Link href={`/images/${img.id}`}>{img.name || img.id}</Link>
                    </td>
                    <td>{img.project ?? '(cluster)'}</td>
                    <td>
                      <StateBadge state={img.state} />
                      {img.state === 'importing' && img.progress !== undefined ? ` ${img.progress}%` : ''}
                    </td>
                    <td>{img.diskFormat ?? '—'}</td>
                    <td>{img.type}</td>
                    <td>{img.visibility}</td>
                    <td>{bytes(img.storedSize)}</td>
                    <td>{bytes(img.virtualSize)}</td>
                    <td>{when(img.createdAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )
      ) : (
        <p aria-busy="true">Loading…</p>
      )}
      <div class="pager">
        <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          Previous page
        </button>
        <span>Page {cursors.length}</span>
        <button type="button" disabled={!page?.nextCursor} onClick={() => setCursors([...cursors, page!.nextCursor])}>
          Next page
        </button>
      </div>
    </>
  );
}
