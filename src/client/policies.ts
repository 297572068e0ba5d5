import { DEFAULT_INSTANCE_BREAKER, DEFAULT_POLICIES, DEFAULT_RETRIES, DEFAULT_SERVICE_BREAKER } from '../manifest/policies.js';
import type { BreakerSpec, RetrySpec } from '../manifest/types.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { RetryBudget } from '../resilience/retry-budget.js';

/** The balancers a client can use (consistent hashing needs a key per call, which the client has no place for). */
export type ClientBalancer = 'peak-ewma' | 'least-request' | 'round-robin';

/**
 * Overrides of the gateway's defaults (docs/resilience.md), key by key, in
 * milliseconds. `false` turns a policy off.
 */
export interface ClientPolicies {
  /** The whole call: every try and backoff. Default 30 000. */
  timeoutMs?: number;
  retries?:
    | false
    | (Partial<Pick<RetrySpec, 'attempts' | 'tryTimeoutMs' | 'methods' | 'backoffMs' | 'maxBackoffMs'>> & {
        on?: Partial<RetrySpec['on']>;
        budget?: Partial<RetrySpec['budget']>;
      });
  breaker?: { instance?: false | Partial<BreakerSpec>; service?: false | Partial<BreakerSpec> };
  balancer?: ClientBalancer;
  /** An instance new to the client ramps up to its full share over this long. Default 10 000; 0 turns it off. */
  slowStartMs?: number;
  /** Requests in flight to one instance (the connection pool's size); a full instance is passed over. Default 256. */
  instanceConcurrency?: number;
}

/** The policies a client applies to one service, complete. */
export interface ResolvedPolicies {
  timeoutMs: number;
  retries: RetrySpec | null;
  breaker: { instance: BreakerSpec | null; service: BreakerSpec | null };
  balancer: ClientBalancer;
  slowStartMs: number;
  instanceConcurrency: number;
}

/** The longest delay a Node timer takes (past it, it fires at once). */
const MAX_TIMER_MS = 2_147_483_647;

/** The gateway's defaults, as the client applies them. */
export const CLIENT_DEFAULTS: ResolvedPolicies = {
  timeoutMs: DEFAULT_POLICIES.timeoutMs,
  retries: DEFAULT_RETRIES,
  breaker: { instance: DEFAULT_INSTANCE_BREAKER, service: DEFAULT_SERVICE_BREAKER },
  balancer: 'peak-ewma',
  slowStartMs: DEFAULT_POLICIES.slowStartMs,
  instanceConcurrency: DEFAULT_POLICIES.limits.instanceConcurrency,
};

/** `base` with `overrides` on top, checked: a bad value throws here, when the client is built, never per call. */
export function resolvePolicies(base: ResolvedPolicies, overrides: ClientPolicies | undefined, where: string): ResolvedPolicies {
  if (overrides === undefined) return base;
  const p: ResolvedPolicies = {
    timeoutMs: overrides.timeoutMs ?? base.timeoutMs,
    retries: mergeRetries(base.retries, overrides.retries),
    breaker: {
      instance: mergeBreaker(base.breaker.instance, DEFAULT_INSTANCE_BREAKER, overrides.breaker?.instance),
      service: mergeBreaker(base.breaker.service, DEFAULT_SERVICE_BREAKER, overrides.breaker?.service),
    },
    balancer: overrides.balancer ?? base.balancer,
    slowStartMs: overrides.slowStartMs ?? base.slowStartMs,
    instanceConcurrency: overrides.instanceConcurrency ?? base.instanceConcurrency,
  };
  check(p, where);
  return p;
}

function mergeRetries(base: RetrySpec | null, input: ClientPolicies['retries']): RetrySpec | null {
  if (input === undefined) return base;
  if (input === false) return null;
  const from = base ?? DEFAULT_RETRIES;
  return {
    attempts: input.attempts ?? from.attempts,
    tryTimeoutMs: input.tryTimeoutMs ?? from.tryTimeoutMs,
    on: { ...from.on, ...definedOnly(input.on ?? {}) },
    methods: (input.methods ?? from.methods).map((m) => m.toUpperCase()),
    backoffMs: input.backoffMs ?? from.backoffMs,
    maxBackoffMs: input.maxBackoffMs ?? from.maxBackoffMs,
    budget: { ...from.budget, ...definedOnly(input.budget ?? {}) },
  };
}

function mergeBreaker(base: BreakerSpec | null, fallback: BreakerSpec, input: false | Partial<BreakerSpec> | undefined): BreakerSpec | null {
  if (input === undefined) return base;
  if (input === false) return null;
  return { ...(base ?? fallback), ...definedOnly(input) };
}

function check(p: ResolvedPolicies, where: string): void {
  const fail = (key: string, rule: string, got: unknown): never => {
    throw new RangeError(`berth/client ${where}: ${key} ${rule}, got ${JSON.stringify(got)}`);
  };
  if (!(p.timeoutMs > 0 && p.timeoutMs <= MAX_TIMER_MS)) fail('timeoutMs', 'must be a positive number of ms (at most 2^31 - 1)', p.timeoutMs);
  if (!(p.slowStartMs >= 0 && Number.isFinite(p.slowStartMs))) fail('slowStartMs', 'must be a non-negative number', p.slowStartMs);
  if (!(Number.isSafeInteger(p.instanceConcurrency) && p.instanceConcurrency >= 1)) fail('instanceConcurrency', 'must be a positive integer', p.instanceConcurrency);
  if (!['peak-ewma', 'least-request', 'round-robin'].includes(p.balancer)) fail('balancer', 'must be peak-ewma, least-request or round-robin', p.balancer);
  const r = p.retries;
  if (r) {
    if (!(Number.isSafeInteger(r.attempts) && r.attempts >= 0)) fail('retries.attempts', 'must be a non-negative integer', r.attempts);
    if (!(r.tryTimeoutMs > 0 && r.tryTimeoutMs <= MAX_TIMER_MS)) fail('retries.tryTimeoutMs', 'must be a positive number of ms (at most 2^31 - 1)', r.tryTimeoutMs);
    if (!(r.backoffMs >= 0 && r.maxBackoffMs >= r.backoffMs && Number.isFinite(r.maxBackoffMs))) fail('retries.backoffMs/maxBackoffMs', 'must be numbers with 0 <= backoffMs <= maxBackoffMs', [r.backoffMs, r.maxBackoffMs]);
    if (!r.on.statuses.every((s) => Number.isInteger(s) && s >= 100 && s <= 599)) fail('retries.on.statuses', 'must be HTTP statuses', r.on.statuses);
    // The state machines check their own settings: build one of each now rather than on the first call.
    new RetryBudget(r.budget);
  }
  const clock = { now: () => 0 };
  if (p.breaker.instance) new CircuitBreaker(p.breaker.instance, clock);
  if (p.breaker.service) new CircuitBreaker(p.breaker.service, clock);
}

/** The keys of `o` whose value is not undefined (so a spread does not erase a default). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
