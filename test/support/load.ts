import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

export interface LoadResult {
  /** ms since the load started (performance clock), and wall-clock ms, for each request's start. */
  requests: { startedAt: number; wallStart: number; ok: boolean; status: number; error?: string; instance?: string; durationMs?: number }[];
  total: number;
  failed: number;
}

/**
 * Steady closed-loop load: `concurrency` workers each send the next GET as soon
 * as the previous one finished, until `durationMs` has passed (bounded in time
 * and count, so it always stops by itself).
 */
export async function steadyLoad(
  baseUrl: string,
  path: string,
  options: { concurrency: number; durationMs: number; maxRequests?: number; onRequest?: (n: number) => void; /** Ends the load early when it settles. */ stop?: () => Promise<unknown> },
): Promise<LoadResult> {
  const pool = new Pool(baseUrl, { connections: options.concurrency });
  const requests: LoadResult['requests'] = [];
  const t0 = performance.now();
  const max = options.maxRequests ?? 1_000_000;
  let stopped = false;
  void options.stop?.().then(
    () => (stopped = true),
    () => (stopped = true),
  );
  async function worker(): Promise<void> {
    while (!stopped && performance.now() - t0 < options.durationMs && requests.length < max) {
      const entry: LoadResult['requests'][number] = { startedAt: performance.now() - t0, wallStart: Date.now(), ok: false, status: 0 };
      requests.push(entry);
      options.onRequest?.(requests.length);
      try {
        const res = await pool.request({ path, method: 'GET' });
        const text = await res.body.text();
        entry.status = res.statusCode;
        entry.durationMs = performance.now() - t0 - entry.startedAt;
        // A 429 is a failure here too: a load test that runs into the edge's rate limit measures nothing else.
        entry.ok = res.statusCode < 500 && res.statusCode !== 429;
        if (entry.ok) entry.instance = (JSON.parse(text) as { instance?: string }).instance;
        else entry.error = text.slice(0, 200);
      } catch (err) {
        entry.error = (err as Error).message;
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  await pool.close();
  return { requests, total: requests.length, failed: requests.filter((r) => !r.ok).length };
}
