/** The console's shell: sign-in gate, navigation, and the page for the current path. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, type ConsoleConfig, type Whoami } from './api.js';
import { currentToken, onAuthChange, signOut } from './auth.js';
import { PageBoundary, ProblemBanner } from './components.js';
import { Link, navigate, useLocation } from './router.js';
import { AuditPage } from './pages/audit.js';
import { GcPage } from './pages/gc.js';
import { ImageDetailPage } from './pages/image-detail.js';
import { ImagesPage } from './pages/images.js';
import { ImportPage } from './pages/import.js';
import { ProjectsPage } from './pages/projects.js';
import { SignInPage, OidcCallbackPage } from './pages/sign-in.js';
import { TokensPage } from './pages/tokens.js';
import { UploadPage } from './pages/upload.js';
import type { Session } from './session.js';
import './style.css';

function App() {
  const { path } = useLocation();
  const [token, setToken] = useState(currentToken());
  const [config, setConfig] = useState<ConsoleConfig>();
  const [me, setMe] = useState<Whoami>();
  const [error, setError] = useState<unknown>();
  useEffect(() => onAuthChange(() => setToken(currentToken())), []);
  useEffect(() => {
    get<ConsoleConfig>('/console').then(setConfig, setError);
  }, []);
  useEffect(() => {
    setMe(undefined);
    if (token) get<Whoami>('/whoami').then(setMe, setError);
  }, [token]);

  if (error && !config)
    return (
      <main id="main">
        <h1>Imago console</h1>
        <ProblemBanner error={error} />
      </main>
    );
  if (!config)
    return (
      <main id="main" aria-busy="true">
        <h1>Imago console</h1>
        <p>Loading…</p>
      </main>
    );
  if (path === '/signin/callback') return <OidcCallbackPage config={config} />;
  if (!token) return <SignInPage config={config} />;
  if (!me)
    return (
      <main id="main" aria-busy="true">
        <h1>Imago console</h1>
        {error ? <ProblemBanner error={error} /> : <p>Signing in…</p>}
      </main>
    );
  const session: Session = { me, config };
  const pages: [string, string, boolean][] = [
    ['/images', 'Images', true],
    ['/upload', 'Upload', true],
    ['/import', 'Import from URL', true],
    ['/projects', 'Projects', true],
    ['/tokens', 'Tokens', true],
    ['/audit', 'Audit log', true],
    ['/gc', 'Storage (GC)', me.serverAdmin],
  ];
  const section = '/' + (path.split('/')[1] ?? '');
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Imago</span>
        <nav aria-label="Console">
          <ul>
            {pages
              .filter(([, , shown]) => shown)
              .map(([href, label]) => (
                <li key={href}>
                  <Link href={href} aria-current={section === href ? 'page' : undefined}>
                    {label}
                  </Link>
                </li>
              ))}
          </ul>
        </nav>
        <span class="who">
          {me.user ?? me.kind}
          {me.serverAdmin ? ' (server admin)' : ''}
          <button type="button" class="link" onClick={() => signOut()}>
            Sign out
          </button>
        </span>
      </header>
      <main id="main">
        <PageBoundary path={path}>
          <Page path={path} session={session} />
        </PageBoundary>
      </main>
    </>
  );
}

function Page({ path, session }: { path: string; session: Session }) {
  const m = /^\/images\/([^/]+)$/.exec(path);
  if (m) return <ImageDetailPage id={decodeURIComponent(m[1]!)} session={session} />;
  switch (path) {
    case '/':
    case '/signin':
    case '/images':
      if (path !== '/images') queueMicrotask(() => navigate('/images', true));
      return <ImagesPage session={session} />;
    case '/upload':
      return <UploadPage session={session} />;
    case '/import':
      return <ImportPage session={session} />;
    case '/projects':
      return <ProjectsPage session={session} />;
    case '/tokens':
      return <TokensPage session={session} />;
    case '/audit':
      return <AuditPage session={session} />;
    case '/gc':
      return <GcPage session={session} />;
    default:
      return (
        <>
          <h1>Not found</h1>
          <p>
            The console has no page at {path}. <Link href="/images">Back to the images</Link>.
          </p>
        </>
      );
  }
}

render(<App />, document.getElementById('app')!);
