/** API tokens: create (the secret is shown once, here), list, revoke. */
import { useEffect, useState } from 'preact/hooks';
import { api, get, query } from '../api.js';
import { Confirm, Field, ProblemBanner } from '../components.js';
import { when } from '../format.js';
import type { Session } from '../session.js';

interface Token {
  id: string;
  name: string;
  user: string;
  project?: string;
  role: string;
  createdAt: string;
  expiresAt?: string;
  revokedAt?: string;
  lastUsedAt?: string;
}

export function TokensPage({ session }: { session: Session }) {
  const [tokens, setTokens] = useState<Token[]>();
  const [error, setError] = useState<unknown>();
  const [secret, setSecret] = useState<{ name: string; token: string }>();
  const [revoking, setRevoking] = useState<Token>();
  const [projects, setProjects] = useState(Object.keys(session.me.roles));
  const [form, setForm] = useState({ name: '', project: projects[0] ?? '', role: 'reader', expires: '', user: '' });
  // a server admin may make tokens for any project
  useEffect(() => {
    if (session.me.serverAdmin) get<{ projects: { name: string }[] }>('/projects').then((r) => setProjects(r.projects.map((p) => p.name)), setError);
  }, []);
  const load = () => get<{ tokens: Token[] }>(`/tokens${query({ revoked: 'true' })}`).then((r) => setTokens(r.tokens), setError);
  useEffect(() => void load(), []);
  const set = (k: keyof typeof form) => (e: Event) => setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
  const create = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    try {
      const r = await api<Token & { token: string }>('POST', '/tokens', {
        name: form.name.trim(),
        project: form.project || undefined,
        role: form.role,
        expiresAt: form.expires ? new Date(`${form.expires}T23:59:59Z`).toISOString() : undefined,
        user: form.user.trim() || undefined,
      });
      setSecret({ name: r.name, token: r.token });
      void load();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <>
      <h1>API tokens</h1>
      <ProblemBanner error={error} />
      {secret ? (
        <div class="secret" role="status">
          <p>
            <strong>Token {secret.name} — copy it now, it is not shown again:</strong>
          </p>
          <Field label="New token" id="new-token-secret">
            <input id="new-token-secret" readOnly value={secret.token} onFocus={(e) => (e.target as HTMLInputElement).select()} />
          </Field>
          <button type="button" onClick={() => void navigator.clipboard?.writeText(secret.token)}>
            Copy token
          </button>{' '}
          <button type="button" onClick={() => setSecret(undefined)}>
            I have copied it
          </button>
        </div>
      ) : null}
      <form class="filters" onSubmit={create} aria-label="Create a token">
        <Field label="Name" id="tok-name">
          <input id="tok-name" required value={form.name} onInput={set('name')} />
        </Field>
        <Field label="Project" id="tok-project">
          <select id="tok-project" value={form.project} onChange={set('project')}>
            {session.me.serverAdmin ? <option value="">(none)</option> : null}
            {projects.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </Field>
        <Field label="Role" id="tok-role">
          <select id="tok-role" value={form.role} onChange={set('role')}>
            <option>reader</option>
            <option>writer</option>
            <option>admin</option>
            {session.me.serverAdmin ? <option>server-admin</option> : null}
          </select>
        </Field>
        <Field label="Expires" id="tok-expires" hint="empty = never">
          <input id="tok-expires" type="date" value={form.expires} onInput={set('expires')} />
        </Field>
        {session.me.serverAdmin ? (
          <Field label="For user" id="tok-user" hint="default: you; a new user is created">
            <input id="tok-user" value={form.user} onInput={set('user')} />
          </Field>
        ) : null}
        <div class="field">
          <button type="submit">Create token</button>
        </div>
      </form>
      {tokens ? (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Tokens</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">User</th>
                <th scope="col">Project</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">Expires</th>
                <th scope="col">Last used</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {tokens.map((t) => (
                <tr key={t.id}>
                  <td>{t.name}</td>
                  <td>{t.user}</td>
                  <td>{t.project ?? '—'}</td>
                  <td>{t.role}</td>
                  <td>{when(t.createdAt)}</td>
                  <td>{t.expiresAt ? when(t.expiresAt) : 'never'}</td>
                  <td>{when(t.lastUsedAt)}</td>
                  <td>
                    {t.revokedAt ? (
                      `revoked ${when(t.revokedAt)}`
                    ) : (
                      <button type="button" class="danger" onClick={() => setRevoking(t)}>
                        Revoke {t.name}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p aria-busy="true">Loading…</p>
      )}
      <Confirm
        open={revoking !== undefined}
        title={`Revoke ${revoking?.name ?? ''}?`}
        confirmLabel="Revoke"
        onCancel={() => setRevoking(undefined)}
        onConfirm={async () => {
          const t = revoking!;
          setRevoking(undefined);
          try {
            await api('DELETE', `/tokens/${encodeURIComponent(t.id)}`);
            void load();
          } catch (e) {
            setError(e);
          }
        }}
      >
        <p>Everything using this token stops working at once.</p>
      </Confirm>
    </>
  );
}
