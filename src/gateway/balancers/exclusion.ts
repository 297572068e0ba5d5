import type { Target } from '../target.js';

/**
 * The exclusion a pick honours: none when it is empty or covers every target,
 * so a retry goes back to a tried instance only when there is no other.
 */
export function effectiveExclusion(targets: readonly Target[], exclude: readonly Target[] | undefined): readonly Target[] | undefined {
  if (exclude === undefined || exclude.length === 0) return undefined;
  for (const t of targets) if (!exclude.includes(t)) return exclude;
  return undefined;
}
