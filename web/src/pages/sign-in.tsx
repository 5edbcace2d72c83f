/** Sign in with an Imago token (checked with /whoami), or with OIDC when the server names an issuer. */
import { useEffect, useState } from 'preact/hooks';
import { ApiError, type ConsoleConfig } from '../api.js';
import { finishOidc, signIn, signOut, startOidc, takeSignOutReason } from '../auth.js';
import { Field, ProblemBanner } from '../components.js';
import { navigate } from '../router.js';

export function SignInPage({ config }: { config: ConsoleConfig }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<unknown>(() => {
    const r = takeSignOutReason();
    return r ? new Error(`you were signed out: ${r}`) : undefined;
  });
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    const t = token.trim();
    try {
      const res = await fetch('/api/v1/whoami', { headers: { authorization: `Bearer ${t}` } });
      if (!res.ok) {
        const p = await res.json().catch(() => ({ detail: `the server answered ${res.status}` }));
        throw new ApiError(res.status, p);
      }
      signIn(t);
      if (location.pathname === '/' || location.pathname === '/signin') navigate('/images', true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="signin">
      <h1>Sign in to Imago</h1>
      <ProblemBanner error={error} />
      <form onSubmit={submit}>
        <Field label="API token" id="token" hint="An Imago token (imago token create, or the admin.token of the first start). Kept in this tab only.">
          <input
            id="token"
            name="token"
            type="password"
            autoComplete="off"
            required
            value={token}
            onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          />
        </Field>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
      {config.oidc ? (
        <p>
          <button type="button" onClick={() => startOidc(config.oidc!).catch(setError)}>
            Sign in with {new URL(config.oidc.issuer).host}
          </button>
        </p>
      ) : null}
    </main>
  );
}

export function OidcCallbackPage({ config }: { config: ConsoleConfig }) {
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    if (!config.oidc) {
      setError(new Error('this server has no OIDC sign-in configured'));
      return;
    }
    finishOidc(config.oidc, new URLSearchParams(location.search)).then(
      () => navigate('/images', true),
      (e) => {
        signOut();
        setError(e);
      },
    );
  }, []);
  return (
    <main id="main">
      <h1>Signing in…</h1>
      <ProblemBanner error={error} />
      {error ? (
        <p>
          <a href="/signin">Back to sign-in</a>
        </p>
      ) : null}
    </main>
  );
}
