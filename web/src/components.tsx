/** Small pieces every page uses: the problem banner, a labelled field, a usage bar, a confirm dialog. */
import { Component, type ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import { ApiError } from './api.js';

/** An error as the server's problem+json says it (detail, code, request id), never a blank page. */
export function ProblemBanner({ error }: { error: unknown }) {
  if (!error) return null;
  const e = error as Error;
  const p = error instanceof ApiError ? error.problem : undefined;
  return (
    <div class="problem" role="alert">
      <strong>{p?.title ?? 'Error'}</strong>
      {p?.status ? ` (${p.status}${p.code ? ` ${p.code}` : ''})` : ''}: <span class="problem-detail">{e.message}</span>
      {p?.requestId ? <div class="muted">request id {p.requestId}</div> : null}
    </div>
  );
}

export function Field(props: { label: string; id: string; children: ComponentChildren; hint?: string }) {
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      {props.children}
      {props.hint ? <small class="muted">{props.hint}</small> : null}
    </div>
  );
}

/** used of limit, as a bar; with no limit there is nothing to fill: the amount alone, "no limit". */
export function UsageBar(props: { label: string; used: number; limit?: number | null; format: (n: number) => string; id: string; kind: string }) {
  const max = props.limit ?? undefined;
  const pct = max ? Math.min(100, Math.round((props.used / max) * 100)) : 0;
  const text = max !== undefined ? `${props.format(props.used)} of ${props.format(max)} (${pct}%)` : `${props.format(props.used)} (no limit)`;
  return (
    <div class="usage" data-kind={props.kind} data-used={props.used}>
      <span id={props.id}>{props.label}</span>: <span class="usage-text">{text}</span>
      {max !== undefined ? (
        <progress aria-labelledby={props.id} value={props.used} max={max} class={pct >= 90 ? 'full' : ''}>
          {text}
        </progress>
      ) : null}
    </div>
  );
}

/** A modal confirmation (the native <dialog>: focus trapped, Escape cancels). */
export function Confirm(props: {
  open: boolean;
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" onClose={props.onCancel}>
      <h2 id="confirm-title">{props.title}</h2>
      <div>{props.children}</div>
      <div class="actions">
        <button type="button" class="danger" onClick={props.onConfirm}>
          {props.confirmLabel}
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </dialog>
  );
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

/**
 * A page that fails while rendering shows what failed and a way on, never a blank page (the
 * rest of the console keeps working: the boundary is around the page, not the shell).
 */
export class PageBoundary extends Component<{ children: ComponentChildren; path: string }, { error?: unknown; path?: string }> {
  override state: { error?: unknown; path?: string } = {};
  static override getDerivedStateFromError(error: unknown) {
    return { error };
  }
  override componentDidUpdate() {
    // another page was opened: try again
    if (this.state.error && this.state.path !== undefined && this.state.path !== this.props.path) this.setState({ error: undefined, path: undefined });
    else if (this.state.error && this.state.path === undefined) this.setState({ path: this.props.path });
  }
  override render() {
    if (!this.state.error) return this.props.children;
    return (
      <>
        <h1>This page could not be shown</h1>
        <ProblemBanner error={this.state.error} />
        <p>
          <a href="/images">Back to the images</a> or reload the page.
        </p>
      </>
    );
  }
}
