import type { Target } from '../target.js';
import type { Balancer } from './balancer.js';

/**
 * Smooth weighted round robin (nginx's): over a cycle each target gets its
 * share of picks, interleaved rather than in bursts. With equal weights it is
 * plain round robin and takes the short path.
 */
export class RoundRobin implements Balancer {
  readonly #targets: readonly Target[];
  readonly #current: number[];
  readonly #total: number;
  readonly #uniform: boolean;
  #next = 0;

  constructor(targets: readonly Target[]) {
    this.#targets = targets.filter((t) => t.weight > 0);
    this.#current = this.#targets.map(() => 0);
    this.#total = this.#targets.reduce((sum, t) => sum + t.weight, 0);
    this.#uniform = this.#targets.every((t) => t.weight === this.#targets[0]?.weight);
  }

  pick(): Target | undefined {
    const targets = this.#targets;
    const n = targets.length;
    if (n === 0) return undefined;
    if (this.#uniform) {
      const target = targets[this.#next];
      this.#next = (this.#next + 1) % n;
      return target;
    }
    let best = 0;
    for (let i = 0; i < n; i++) {
      this.#current[i]! += targets[i]!.weight;
      if (this.#current[i]! > this.#current[best]!) best = i;
    }
    this.#current[best]! -= this.#total;
    return targets[best];
  }
}
