import type { Target } from '../target.js';
import type { Balancer, PickOptions } from './balancer.js';
import { effectiveExclusion } from './exclusion.js';
import { slowStartFactor } from './slow-start.js';

/**
 * Smooth weighted round robin (nginx's): over a cycle each target gets its
 * share of picks, interleaved rather than in bursts. Effective weights (weight
 * × slow-start factor) are read at each pick, which the algorithm allows: each
 * pick adds the weights it used and takes the same total off the winner. With
 * equal weights and no target in slow start it is plain round robin and takes
 * the short path.
 */
export class RoundRobin implements Balancer {
  readonly #targets: readonly Target[];
  readonly #current: Float64Array;
  readonly #slowStartMs: number;
  readonly #equal: boolean;
  /**
   * Every target past its slow start. Time only moves forward and a target
   * re-entering rotation brings a new route table (so a new balancer), hence a
   * balancer that saw all targets warm may stop asking.
   */
  #warm: boolean;
  #next = 0;

  constructor(targets: readonly Target[], slowStartMs: number) {
    this.#targets = targets.filter((t) => t.weight > 0);
    this.#current = new Float64Array(this.#targets.length);
    this.#slowStartMs = slowStartMs;
    this.#equal = this.#targets.every((t) => t.weight === this.#targets[0]?.weight);
    this.#warm = !(slowStartMs > 0);
  }

  pick(options: PickOptions): Target | undefined {
    const targets = this.#targets;
    const n = targets.length;
    if (n === 0) return undefined;
    const exclude = effectiveExclusion(targets, options.exclude);

    if (this.#equal && this.#warm) {
      // At most n steps: the exclusion leaves at least one target.
      for (;;) {
        const target = targets[this.#next]!;
        this.#next = this.#next + 1 === n ? 0 : this.#next + 1;
        if (exclude === undefined || !exclude.includes(target)) return target;
      }
    }

    const current = this.#current;
    const now = options.now;
    let warm = true;
    let best = -1;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const target = targets[i]!;
      let weight = target.weight;
      if (!this.#warm) {
        const factor = slowStartFactor(target, now, this.#slowStartMs);
        if (factor < 1) warm = false;
        weight *= factor;
      }
      if (exclude !== undefined && exclude.includes(target)) continue;
      total += weight;
      current[i]! += weight;
      if (best === -1 || current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    this.#warm = warm;
    return targets[best];
  }
}
