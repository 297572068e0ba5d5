import type { Target } from '../target.js';

/** Envoy's `min_weight_percent` default: a new instance starts with a tenth of its weight, not nothing. */
export const SLOW_START_MIN_FACTOR = 0.1;

/**
 * Envoy's slow_start_config with aggression 1: an instance's weight ramps
 * linearly from a tenth to all of it over `slowStartMs` after it (re)entered
 * rotation, so a cold instance (empty caches, JIT not warm) is not handed its
 * full share the moment its first check passes. 1 when slow start is off.
 */
export function slowStartFactor(target: Target, now: number, slowStartMs: number): number {
  if (!(slowStartMs > 0)) return 1;
  const factor = (now - target.passingSince) / slowStartMs;
  return factor >= 1 ? 1 : factor > SLOW_START_MIN_FACTOR ? factor : SLOW_START_MIN_FACTOR;
}
