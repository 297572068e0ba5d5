import { isDeepStrictEqual } from 'node:util';
import type { UpstreamClient } from './http1/client.js';
import type { Clock } from '../clock.js';
import type { PolicySpec, RouteSpec } from '../manifest/types.js';
import { Bulkhead, type BulkheadSnapshot } from '../resilience/bulkhead.js';
import { CircuitBreaker, type BreakerSnapshot, type BreakerTransition } from '../resilience/circuit-breaker.js';
import { OutlierDetector, type OutlierEvent } from '../resilience/outlier-detector.js';
import { RetryBudget, type RetryBudgetSnapshot } from '../resilience/retry-budget.js';
import { ServiceEdge } from './edge.js';
import type { Target } from './target.js';

/** A service's policies as they stand (`GET /v1/services/{service}`). */
export interface PolicyState {
  breaker: BreakerSnapshot | null;
  budget: RetryBudgetSnapshot;
  limits: BulkheadSnapshot & { concurrency: number; queue: number; instanceConcurrency: number };
  versions: { version: string; ejected: number; panic: boolean }[];
  instances: { id: string; version: string; inflight: number; breaker: BreakerSnapshot | null; ejected: boolean; ejectedUntil: number | null; ejections: number }[];
}

/** Where a state change happened, for logs and metrics. */
export interface PolicyScope {
  group: string;
  service: string;
  /** For an instance breaker or an ejection. */
  version?: string;
  instance?: string;
}

export interface RuntimeEvents {
  breaker(scope: PolicyScope, transition: BreakerTransition): void;
  outlier(scope: PolicyScope, event: OutlierEvent): void;
}

/**
 * The live state of one service's policies: its retry budget, bulkhead,
 * service breaker, and an outlier detector per version. It outlives route
 * tables (like targets do), so that a rebuild keeps breakers, ejections and
 * counts; a reload that changes a policy's settings starts that one afresh.
 */
export class ServiceRuntime {
  readonly group: string;
  readonly service: string;
  policies: PolicySpec;
  budget!: RetryBudget;
  bulkhead!: Bulkhead;
  breaker: CircuitBreaker | null = null;
  /** How requests reach the instances (a TLS client for a service with `tls:`); null: the gateway's shared one. */
  client: UpstreamClient | null = null;
  /** Authentication, authorization, rate limits, body size and methods, per route. */
  edge!: ServiceEdge;
  #routes: readonly RouteSpec[];
  readonly #detectors = new Map<string, OutlierDetector>();
  /** Targets this service routes to, with their version: for the instance breakers in snapshots. */
  readonly #targets = new Map<string, { version: string; target: Target }>();
  readonly #clock: Clock;
  readonly #events: RuntimeEvents;

  constructor(group: string, service: string, policies: PolicySpec, routes: readonly RouteSpec[], clock: Clock, events: RuntimeEvents) {
    this.group = group;
    this.service = service;
    this.policies = policies;
    this.#routes = routes;
    this.#clock = clock;
    this.#events = events;
    this.#build(undefined);
  }

  /** Takes new policies; parts whose settings did not change keep their state. */
  update(policies: PolicySpec, routes: readonly RouteSpec[]): void {
    if (isDeepStrictEqual(policies, this.policies) && isDeepStrictEqual(routes, this.#routes)) return;
    const before = this.policies;
    this.policies = policies;
    const routesChanged = !isDeepStrictEqual(routes, this.#routes);
    this.#routes = routes;
    this.#build(before, routesChanged);
  }

  /** The detector of one version's instances (null when outlier detection is off); `ids` are its passing instances. */
  detector(version: string, ids: readonly string[]): OutlierDetector | null {
    const spec = this.policies.outlier;
    if (!spec) return null;
    let detector = this.#detectors.get(version);
    if (!detector) {
      detector = new OutlierDetector(spec, this.#clock, (event) => this.#events.outlier({ group: this.group, service: this.service, version, instance: event.instance }, event));
      this.#detectors.set(version, detector);
    }
    detector.setInstances(ids);
    return detector;
  }

  /** The detector of a version already known (for recording outcomes). */
  detectorOf(version: string): OutlierDetector | undefined {
    return this.#detectors.get(version);
  }

  /** Forgets detectors of versions no longer routed. */
  retainVersions(versions: ReadonlySet<string>): void {
    for (const [version, detector] of this.#detectors) {
      if (versions.has(version)) continue;
      detector.close();
      this.#detectors.delete(version);
    }
  }

  /** Gives a target the instance breaker these policies call for (or none). */
  equip(target: Target, version: string): void {
    this.#targets.set(target.id, { version, target });
    const spec = this.policies.breaker.instance;
    if (spec === null) {
      target.breaker = null;
      target.breakerSpec = null;
      return;
    }
    if (target.breaker && isDeepStrictEqual(target.breakerSpec, spec)) return;
    const scope: PolicyScope = { group: this.group, service: this.service, version, instance: target.id };
    target.breaker = new CircuitBreaker(spec, this.#clock, (t) => this.#events.breaker(scope, t));
    target.breakerSpec = spec;
  }

  /** What the admin API shows: every policy's live state. */
  snapshot(): PolicyState {
    const instances: PolicyState['instances'] = [];
    for (const [id, { version, target }] of this.#targets) {
      if (!target.routed) {
        this.#targets.delete(id);
        continue;
      }
      const outlier = this.#detectors.get(version)?.snapshot().instances.find((i) => i.id === id);
      instances.push({ id, version, inflight: target.inflight, breaker: target.breaker?.snapshot() ?? null, ejected: outlier?.ejected ?? false, ejectedUntil: outlier?.until ?? null, ejections: outlier?.times ?? 0 });
    }
    return {
      breaker: this.breaker?.snapshot() ?? null,
      budget: this.budget.snapshot(),
      limits: { ...this.bulkhead.snapshot(), concurrency: this.policies.limits.concurrency, queue: this.policies.limits.queue, instanceConcurrency: this.policies.limits.instanceConcurrency },
      versions: [...this.#detectors].map(([version, d]) => {
        const snap = d.snapshot();
        return { version, ejected: snap.ejected, panic: snap.panic };
      }),
      instances,
    };
  }

  close(): void {
    for (const d of this.#detectors.values()) d.close();
    this.#detectors.clear();
  }

  #build(before: PolicySpec | undefined, routesChanged = false): void {
    const p = this.policies;
    // The rate-limit buckets live in the gateway's limiter store, keyed by service and route: they survive a rebuild.
    if (!before || routesChanged || !isDeepStrictEqual(before.edge, p.edge)) this.edge = new ServiceEdge(`${this.group}/${this.service}`, p.edge, this.#routes);
    const budget = p.retries?.budget ?? { ratio: 0, minConcurrent: 0 };
    if (!before || !isDeepStrictEqual(before.retries?.budget, p.retries?.budget)) this.budget = new RetryBudget(budget);
    if (!before || !isDeepStrictEqual(before.limits, p.limits)) this.bulkhead = new Bulkhead({ maxConcurrent: p.limits.concurrency, maxQueue: p.limits.queue });
    if (!before || !isDeepStrictEqual(before.breaker.service, p.breaker.service)) {
      const spec = p.breaker.service;
      const scope: PolicyScope = { group: this.group, service: this.service };
      this.breaker = spec ? new CircuitBreaker(spec, this.#clock, (t) => this.#events.breaker(scope, t)) : null;
    }
    if (before && !isDeepStrictEqual(before.outlier, p.outlier)) this.close();
  }
}
