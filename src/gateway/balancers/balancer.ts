import type { Target } from '../target.js';
import { Hash } from './hash.js';
import { LeastRequest } from './least-request.js';
import { PeakEwmaBalancer } from './peak-ewma.js';
import { RoundRobin } from './round-robin.js';

/** How the gateway spreads requests over a version's instances (the manifest's `balancer:`). */
export type { BalancerSpec } from '../../manifest/types.js';
import type { BalancerSpec } from '../../manifest/types.js';

export interface PickOptions {
  /**
   * Targets this request already tried: not picked again while another target
   * exists. When every target was tried, one of them is returned anyway, chosen
   * by the balancer's own rule: a retry goes back to a tried instance only when
   * there is no other.
   */
  exclude?: readonly Target[];
  /** Consistent-hash key (header or cookie value); balancers other than hash ignore it. */
  hashKey?: string;
  /** The clock reading of this request (ms, performance.now()), for EWMA and slow start. */
  now: number;
}

/** Picks the instance for one request among a version's passing instances. */
export interface Balancer {
  /** Undefined only when there is no target with a weight above 0. */
  pick(options: PickOptions): Target | undefined;
}

export interface BalancerOptions {
  /** Uniform in [0, 1); tests pass a seeded or fixed one. */
  random?: () => number;
  /** New instances' share ramps up over this many ms after `passingSince` (0 or absent: off). Ignored by hash. */
  slowStartMs?: number;
}

/** Built once per route table; targets with weight 0 are left out. */
export function createBalancer(spec: BalancerSpec, targets: readonly Target[], options: BalancerOptions = {}): Balancer {
  const random = options.random ?? Math.random;
  const slowStartMs = options.slowStartMs ?? 0;
  switch (spec.kind) {
    case 'peak-ewma':
      return new PeakEwmaBalancer(targets, random, slowStartMs);
    case 'least-request':
      return new LeastRequest(targets, random, slowStartMs);
    case 'round-robin':
      return new RoundRobin(targets, slowStartMs);
    case 'hash':
      return new Hash(targets, new PeakEwmaBalancer(targets, random, slowStartMs));
  }
}
