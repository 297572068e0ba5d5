import type { Target } from '../target.js';
import type { Balancer, PickOptions } from './balancer.js';
import { slowStartFactor } from './slow-start.js';
import { pickOfTwo, type Cost } from './two-choices.js';

/**
 * Power of two choices on in-flight requests (Envoy's LEAST_REQUEST): of two
 * targets drawn at random, the one with fewer requests in flight per unit of
 * weight wins. Counting the request about to be sent, (in flight + 1) /
 * weight, as Envoy does: with plain in flight / weight every idle target costs
 * 0 whatever its weight, and neither weight nor slow start would tell them apart.
 */
export class LeastRequest implements Balancer {
  readonly #targets: readonly Target[];
  readonly #random: () => number;
  readonly #cost: Cost;

  constructor(targets: readonly Target[], random: () => number, slowStartMs: number) {
    this.#targets = targets.filter((t) => t.weight > 0);
    this.#random = random;
    this.#cost = (t, now) => (t.inflight + 1) / (t.weight * slowStartFactor(t, now, slowStartMs));
  }

  pick(options: PickOptions): Target | undefined {
    return pickOfTwo(this.#targets, options, this.#random, this.#cost);
  }
}
