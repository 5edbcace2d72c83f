/** What garbage collection would reclaim now (GET /api/v1/gc: a dry run; server admins). */
import { useEffect, useState } from 'preact/hooks';
import { get } from '../api.js';
import { ProblemBanner, UsageBar } from '../components.js';
import { bytes, when } from '../format.js';
import type { Session } from '../session.js';

interface Plan {
  totalBytes: number;
  usedBytes: number;
  reclaimableBytes: number;
  youngBytes: number;
  graceMs: number;
  youngReclaimableBy?: string;
  candidateCount: number;
  candidates: { digest: string; sizeBytes: number; committedAt: string }[];
}

export function GcPage({ session }: { session: Session }) {
  const [plan, setPlan] = useState<Plan>();
  const [error, setError] = useState<unknown>();
  const check = () => {
    setError(undefined);
    get<Plan>('/gc').then(setPlan, setError);
  };
  useEffect(check, []);
  return (
    <>
      <h1>Storage and garbage collection</h1>
      {!session.me.serverAdmin ? <p>Only server administrators see this page.</p> : null}
      <ProblemBanner error={error} />
      <button type="button" onClick={check}>
        Check again
      </button>
      {plan ? (
        <>
          <UsageBar id="gc-used" kind="referenced" label="Referenced" used={plan.usedBytes} limit={plan.totalBytes} format={bytes} />
          <dl class="facts">
            <dt>Stored blobs</dt>
            <dd>{bytes(plan.totalBytes)}</dd>
            <dt>Reclaimable now</dt>
            <dd class="gc-reclaimable">
              {bytes(plan.reclaimableBytes)} in {plan.candidateCount} blob(s)
            </dd>
            <dt>Kept for the grace period ({Math.round(plan.graceMs / 60000)} min)</dt>
            <dd>
              {bytes(plan.youngBytes)}
              {plan.youngReclaimableBy ? `, all reclaimable by ${when(plan.youngReclaimableBy)}` : ''}
            </dd>
          </dl>
          <p class="muted">
            To reclaim: <code>imago gc</code> on the server (or a schedule, <code>--gc-schedule</code>).
          </p>
          {plan.candidates.length > 0 ? (
            <div class="table-wrap">
              <table>
                <caption>Unreferenced blobs{plan.candidateCount > plan.candidates.length ? ` (first ${plan.candidates.length})` : ''}</caption>
                <thead>
                  <tr>
                    <th scope="col">Digest</th>
                    <th scope="col">Size</th>
                    <th scope="col">Stored</th>
                  </tr>
                </thead>
                <tbody>
                  {plan.candidates.map((c) => (
                    <tr key={c.digest}>
                      <td>
                        <code class="wrap">{c.digest}</code>
                      </td>
                      <td>{bytes(c.sizeBytes)}</td>
                      <td>{when(c.committedAt)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : null}
        </>
      ) : null}
    </>
  );
}
