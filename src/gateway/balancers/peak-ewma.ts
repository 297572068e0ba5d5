import type { Target } from '../target.js';
import type { Balancer, PickOptions } from './balancer.js';
import { slowStartFactor } from './slow-start.js';
import { pickOfTwo, type Cost } from './two-choices.js';

/**
 * Power of two choices on expected latency (Finagle's and linkerd2-proxy's
 * peak EWMA): cost = latency estimate × (in flight + 1) / weight. A slow or
 * failing instance is avoided from its first slow response, and the in-flight
 * factor keeps a fast one from being buried: its cost grows with every request
 * it already holds.
 */
export class PeakEwmaBalancer implements Balancer {
  readonly #targets: readonly Target[];
  readonly #random: () => number;
  readonly #cost: Cost;

  constructor(targets: readonly Target[], random: () => number, slowStartMs: number) {
    this.#targets = targets.filter((t) => t.weight > 0);
    this.#random = random;
    this.#cost = (t, now) => (t.ewma.estimate(now) * (t.inflight + 1)) / (t.weight * slowStartFactor(t, now, slowStartMs));
  }

  pick(options: PickOptions): Target | undefined {
    return pickOfTwo(this.#targets, options, this.#random, this.#cost);
  }
}
