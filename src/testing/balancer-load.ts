import type { Balancer } from '../gateway/balancers/balancer.js';
import type { Target } from '../gateway/target.js';

/** A seeded uniform [0, 1) source (mulberry32), so a balancer test draws the same numbers on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface LoadOptions {
  balancer: Balancer;
  /** Clock reading of the first request (ms). */
  start: number;
  /** One request every this many ms. */
  intervalMs: number;
  requests: number;
  /** How the instance behind `target` answers a request sent at `now`. */
  serve(target: Target, now: number): { rttMs: number; failed?: boolean };
}

export interface LoadPick {
  at: number;
  target: Target;
}

/**
 * Open-loop load on simulated time, as the gateway drives a balancer: pick,
 * acquire, and when the answer comes release and report its RTT to the
 * target's EWMA. Requests finishing before the next arrival are reported first.
 */
export function runLoad(options: LoadOptions): LoadPick[] {
  const picks: LoadPick[] = [];
  // Pending answers, ordered by finishing time.
  const pending: { end: number; rtt: number; failed: boolean; target: Target }[] = [];
  const settle = (until: number): void => {
    while (pending.length > 0 && pending[0]!.end <= until) {
      const done = pending.shift()!;
      done.target.release();
      done.target.ewma.observe(done.rtt, done.failed, done.end);
    }
  };
  for (let k = 0; k < options.requests; k++) {
    const now = options.start + k * options.intervalMs;
    settle(now);
    const target = options.balancer.pick({ now });
    if (!target) throw new Error(`nothing picked at ${now}`);
    picks.push({ at: now, target });
    target.acquire();
    const answer = options.serve(target, now);
    const end = now + answer.rttMs;
    let i = pending.length;
    while (i > 0 && pending[i - 1]!.end > end) i--;
    pending.splice(i, 0, { end, rtt: answer.rttMs, failed: answer.failed ?? false, target });
  }
  settle(Infinity);
  return picks;
}

/** Picks per target id among those made in [from, to). */
export function shares(picks: readonly LoadPick[], from = -Infinity, to = Infinity): Record<string, number> {
  const out: Record<string, number> = {};
  let total = 0;
  for (const p of picks) {
    if (p.at < from || p.at >= to) continue;
    out[p.target.id] = (out[p.target.id] ?? 0) + 1;
    total++;
  }
  for (const id of Object.keys(out)) out[id]! /= total;
  return out;
}
