import type { BalancerKind } from '../../manifest/types.js';
import type { Target } from '../target.js';
import { LeastRequest } from './least-request.js';
import { RoundRobin } from './round-robin.js';

/** Picks the instance for one request among a version's passing instances. */
export interface Balancer {
  /** Undefined only when there is no target with a weight above 0. */
  pick(): Target | undefined;
}

export function createBalancer(kind: BalancerKind, targets: readonly Target[], random: () => number = Math.random): Balancer {
  return kind === 'least-request' ? new LeastRequest(targets, random) : new RoundRobin(targets);
}
