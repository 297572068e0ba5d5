import type { Target } from '../target.js';
import type { PickOptions } from './balancer.js';
import { effectiveExclusion } from './exclusion.js';

/** What a target costs for one more request at `now`; lower wins. */
export type Cost = (target: Target, now: number) => number;

/**
 * Power of two choices: two distinct targets drawn at random among those the
 * request has not tried, the cheaper one wins (the first drawn on a tie).
 * Nearly as good as a full scan, and free of the herd a full scan causes when
 * every picker sees the same minimum. When every target was tried, the draw is
 * among all of them.
 *
 * Allocates nothing: excluded targets are skipped in place (a retry excludes
 * one or two, so the extra scans are short).
 */
export function pickOfTwo(targets: readonly Target[], options: PickOptions, random: () => number, cost: Cost): Target | undefined {
  const n = targets.length;
  if (n === 0) return undefined;
  const exclude = effectiveExclusion(targets, options.exclude);
  let candidates = n;
  if (exclude !== undefined) for (const t of targets) if (exclude.includes(t)) candidates--;
  if (candidates === 1) return nth(targets, exclude, 0);
  const i = Math.floor(random() * candidates);
  let j = Math.floor(random() * (candidates - 1));
  if (j >= i) j++;
  // i and j are below the number of candidates, so both exist.
  const a = nth(targets, exclude, i)!;
  const b = nth(targets, exclude, j)!;
  return cost(b, options.now) < cost(a, options.now) ? b : a;
}

/** The k-th target not excluded. */
function nth(targets: readonly Target[], exclude: readonly Target[] | undefined, k: number): Target | undefined {
  if (exclude === undefined) return targets[k];
  for (const t of targets) {
    if (exclude.includes(t)) continue;
    if (k-- === 0) return t;
  }
  return undefined;
}
