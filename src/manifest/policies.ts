/**
 * The gateway's policies for a service: Berth's defaults, then the group's
 * keys, then the service's, merged key by key (a service that sets
 * `retries: { attempts: 1 }` keeps the group's or the default try timeout).
 * `false` turns a policy off; `true` restores its defaults.
 *
 * The defaults are meant for an edge facing the internet, with no tuning:
 * docs/resilience.md gives the reason for each.
 */
import type { EdgeInput, PolicyInput } from './schema.js';
import type { AuthorizeRule, BalancerSpec, BreakerSpec, EdgePolicySpec, LimitsSpec, OutlierSpec, PolicySpec, RateRule, RetrySpec } from './types.js';

export const DEFAULT_RETRIES: RetrySpec = {
  attempts: 2,
  tryTimeoutMs: 5_000,
  on: { connect: true, reset: true, timeout: true, statuses: [502, 503, 504] },
  methods: ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'],
  backoffMs: 25,
  maxBackoffMs: 250,
  budget: { ratio: 0.2, minConcurrent: 3 },
};

export const DEFAULT_INSTANCE_BREAKER: BreakerSpec = {
  consecutiveFailures: 5,
  failureRatio: 0.5,
  windowMs: 10_000,
  minRequests: 20,
  openMs: 5_000,
  maxOpenMs: 60_000,
  halfOpenRequests: 1,
};

export const DEFAULT_SERVICE_BREAKER: BreakerSpec = {
  consecutiveFailures: 0,
  failureRatio: 0.5,
  windowMs: 10_000,
  minRequests: 50,
  openMs: 5_000,
  maxOpenMs: 30_000,
  halfOpenRequests: 5,
};

export const DEFAULT_OUTLIER: OutlierSpec = {
  consecutiveErrors: 5,
  consecutiveGatewayErrors: 5,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectedPercent: 50,
  latency: { factor: 5, minMs: 100, minRequests: 10 },
  panicThresholdPercent: 50,
};

export const DEFAULT_LIMITS: LimitsSpec = { concurrency: 1_000, queue: 500, instanceConcurrency: 256 };

/**
 * On by default, tuned for an edge facing the internet (docs/security.md):
 * a client address gets 200 requests a second with bursts of 400, an
 * authenticated subject 1,000 with bursts of 2,000, and a body 10 MiB.
 */
export const DEFAULT_EDGE: EdgePolicySpec = {
  auth: null,
  authorize: [],
  rateLimit: { perIp: { ratePerSecond: 200, burst: 400 }, perSubject: { ratePerSecond: 1_000, burst: 2_000 } },
  maxBodyBytes: 10 * 1024 * 1024,
  methods: null,
};

export const DEFAULT_POLICIES: PolicySpec = {
  balancer: { kind: 'peak-ewma' },
  timeoutMs: 30_000,
  slowStartMs: 10_000,
  retries: DEFAULT_RETRIES,
  breaker: { instance: DEFAULT_INSTANCE_BREAKER, service: DEFAULT_SERVICE_BREAKER },
  outlier: DEFAULT_OUTLIER,
  limits: DEFAULT_LIMITS,
  edge: DEFAULT_EDGE,
};

/** The policies of one service: defaults ← group ← service. */
export function toPolicies(group: PolicyInput, service: PolicyInput): PolicySpec {
  let policies = DEFAULT_POLICIES;
  for (const input of [group, service]) policies = applyPolicies(policies, input);
  return policies;
}

function applyPolicies(base: PolicySpec, input: PolicyInput): PolicySpec {
  return {
    balancer: input.balancer === undefined ? base.balancer : toBalancer(input.balancer),
    timeoutMs: input.timeout ?? base.timeoutMs,
    slowStartMs: input.slowStart ?? base.slowStartMs,
    retries: input.retries === undefined ? base.retries : applyRetries(base.retries, input.retries),
    breaker: input.breaker === undefined ? base.breaker : applyBreakers(base.breaker, input.breaker),
    outlier: input.outlier === undefined ? base.outlier : applyOutlier(base.outlier, input.outlier),
    limits: { ...base.limits, ...definedOnly(input.limits ?? {}) },
    edge: applyEdge(base.edge, input),
  };
}

/** Edge policies: `base` overridden by the keys `input` sets (a group's, a service's or a route's). */
export function applyEdge(base: EdgePolicySpec, input: EdgeInput): EdgePolicySpec {
  return {
    auth:
      input.auth === undefined
        ? base.auth
        : input.auth === false
          ? null
          : {
              jwt: input.auth.jwt === undefined ? (base.auth?.jwt ?? []) : typeof input.auth.jwt === 'string' ? [input.auth.jwt] : [...new Set(input.auth.jwt)],
              apiKey: input.auth.apiKey ?? base.auth?.apiKey ?? false,
              anonymous: input.auth.anonymous ?? base.auth?.anonymous ?? false,
            },
    authorize: input.authorize === undefined ? base.authorize : input.authorize.map(toRule),
    rateLimit:
      input.rateLimit === undefined
        ? base.rateLimit
        : input.rateLimit === false
          ? { perIp: null, perSubject: null }
          : {
              perIp: input.rateLimit.perIp === undefined ? base.rateLimit.perIp : toRateRule(input.rateLimit.perIp),
              perSubject: input.rateLimit.perSubject === undefined ? base.rateLimit.perSubject : toRateRule(input.rateLimit.perSubject),
            },
    maxBodyBytes: input.maxBody ?? base.maxBodyBytes,
    methods: input.methods === undefined ? base.methods : [...new Set(input.methods)],
  };
}

type RateInput = { count: number; perMs: number };

/** `100/s` is 100 a second with bursts of 100; a map may set the burst apart. */
function toRateRule(input: false | RateInput | { rate: RateInput; burst?: number | undefined }): RateRule | null {
  if (input === false) return null;
  const rate = 'rate' in input ? input.rate : input;
  const burst = 'rate' in input ? input.burst : undefined;
  return { ratePerSecond: (rate.count * 1000) / rate.perMs, burst: burst ?? Math.max(1, Math.ceil(rate.count)) };
}

function toRule(input: NonNullable<EdgeInput['authorize']>[number]): AuthorizeRule {
  return {
    methods: input.methods === undefined ? null : [...new Set(input.methods)],
    path: input.path ?? null,
    roles: input.roles ?? null,
    scopes: input.scopes ?? null,
    claims: input.claims ?? null,
    anonymous: input.anonymous ?? false,
  };
}

function toBalancer(input: NonNullable<PolicyInput['balancer']>): BalancerSpec {
  if (typeof input === 'string') return { kind: input };
  const { header, cookie } = input.hash;
  return { kind: 'hash', ...(header !== undefined ? { header } : {}), ...(cookie !== undefined ? { cookie } : {}) };
}

function applyRetries(base: RetrySpec | null, input: NonNullable<PolicyInput['retries']>): RetrySpec | null {
  if (input === false) return null;
  const from = base ?? DEFAULT_RETRIES;
  if (input === true) return from;
  return {
    attempts: input.attempts ?? from.attempts,
    tryTimeoutMs: input.tryTimeout ?? from.tryTimeoutMs,
    on: input.on === undefined ? from.on : retryConditions(input.on),
    methods: input.methods ?? from.methods,
    backoffMs: input.backoff ?? from.backoffMs,
    maxBackoffMs: input.maxBackoff ?? from.maxBackoffMs,
    budget: { ...from.budget, ...definedOnly(input.budget ?? {}) },
  };
}

function retryConditions(on: readonly (string | number)[]): RetrySpec['on'] {
  return {
    connect: on.includes('connect'),
    reset: on.includes('reset'),
    timeout: on.includes('timeout'),
    statuses: [...new Set(on.filter((c): c is number => typeof c === 'number'))].sort((a, b) => a - b),
  };
}

type BreakerInput = Exclude<NonNullable<PolicyInput['breaker']>, boolean>['instance'];

function applyBreakers(base: PolicySpec['breaker'], input: NonNullable<PolicyInput['breaker']>): PolicySpec['breaker'] {
  if (input === false) return { instance: null, service: null };
  if (input === true) return { instance: base.instance ?? DEFAULT_INSTANCE_BREAKER, service: base.service ?? DEFAULT_SERVICE_BREAKER };
  return {
    instance: input.instance === undefined ? base.instance : applyBreaker(base.instance ?? DEFAULT_INSTANCE_BREAKER, input.instance),
    service: input.service === undefined ? base.service : applyBreaker(base.service ?? DEFAULT_SERVICE_BREAKER, input.service),
  };
}

function applyBreaker(from: BreakerSpec, input: NonNullable<BreakerInput>): BreakerSpec | null {
  if (input === false) return null;
  if (input === true) return from;
  return {
    consecutiveFailures: input.consecutiveFailures ?? from.consecutiveFailures,
    failureRatio: input.failureRatio ?? from.failureRatio,
    windowMs: input.window ?? from.windowMs,
    minRequests: input.minRequests ?? from.minRequests,
    openMs: input.openFor ?? from.openMs,
    maxOpenMs: input.maxOpenFor ?? from.maxOpenMs,
    halfOpenRequests: input.halfOpenRequests ?? from.halfOpenRequests,
  };
}

function applyOutlier(base: OutlierSpec | null, input: NonNullable<PolicyInput['outlier']>): OutlierSpec | null {
  if (input === false) return null;
  const from = base ?? DEFAULT_OUTLIER;
  if (input === true) return from;
  const latency = input.latency;
  return {
    consecutiveErrors: input.consecutiveErrors ?? from.consecutiveErrors,
    consecutiveGatewayErrors: input.consecutiveGatewayErrors ?? from.consecutiveGatewayErrors,
    baseEjectionMs: input.ejectionTime ?? from.baseEjectionMs,
    maxEjectionMs: input.maxEjectionTime ?? from.maxEjectionMs,
    maxEjectedPercent: input.maxEjectedPercent ?? from.maxEjectedPercent,
    latency:
      latency === undefined
        ? from.latency
        : latency === false
          ? null
          : {
              factor: latency.factor ?? from.latency?.factor ?? DEFAULT_OUTLIER.latency!.factor,
              minMs: latency.min ?? from.latency?.minMs ?? DEFAULT_OUTLIER.latency!.minMs,
              minRequests: latency.minRequests ?? from.latency?.minRequests ?? DEFAULT_OUTLIER.latency!.minRequests,
            },
    panicThresholdPercent: input.panicThreshold ?? from.panicThresholdPercent,
  };
}

/** The keys of `o` whose value is not undefined (so a spread does not erase a default). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
