import semver from 'semver';
import type { Clock } from '../clock.js';
import { BerthError } from '../errors.js';
import { createBalancer, type Balancer } from '../gateway/balancers/balancer.js';
import { Target } from '../gateway/target.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { RetryBudget } from '../resilience/retry-budget.js';
import type { ServiceView } from './discovery.js';
import type { ResolvedPolicies } from './policies.js';

/** The instances one call balances over: one version's, as the gateway picks it. */
export interface Route {
  version: string;
  balancer: Balancer;
  /** The balancer's targets (weight 0 included): the bound on passes over full or open instances. */
  size: number;
}

/** Ranges kept per service; a client asks for few distinct ones. */
const MAX_ROUTES = 64;

/**
 * One service as a client calls it: its policies' state (retry budget,
 * service breaker) and a Target per passing instance (latency estimate,
 * requests in flight, instance breaker), kept across discovery updates as the
 * gateway keeps them across route tables. Balancers are built per version
 * when the instances change, not per call.
 */
export class ServiceState {
  readonly name: string;
  readonly policies: ResolvedPolicies;
  readonly budget: RetryBudget;
  readonly breaker: CircuitBreaker | null;
  readonly #clock: Clock;
  readonly #random: () => number;
  #view: ServiceView | undefined;
  #targets = new Map<string, Target>();
  readonly #routes = new Map<string, Route>();

  constructor(name: string, policies: ResolvedPolicies, clock: Clock, random: () => number) {
    this.name = name;
    this.policies = policies;
    this.#clock = clock;
    this.#random = random;
    this.budget = new RetryBudget(policies.retries?.budget ?? { ratio: 0, minConcurrent: 0 });
    this.breaker = policies.breaker.service ? new CircuitBreaker(policies.breaker.service, clock) : null;
  }

  /** Takes the instances discovery knows now; a target of an instance it already had keeps its state. */
  sync(view: ServiceView): void {
    if (view === this.#view) return;
    this.#view = view;
    const now = this.#clock.now();
    const next = new Map<string, Target>();
    for (const instance of view.instances) {
      let target = this.#targets.get(instance.id);
      if (target === undefined || target.address !== instance.address || target.port !== instance.port) {
        target = new Target(instance.id, instance.address, instance.port, instance.weight, { now });
        const spec = this.policies.breaker.instance;
        if (spec) {
          target.breaker = new CircuitBreaker(spec, this.#clock);
          target.breakerSpec = spec;
        }
      }
      target.weight = instance.weight;
      next.set(instance.id, target);
    }
    this.#targets = next;
    this.#routes.clear();
  }

  /** The target of an instance, if it is still passing. */
  target(id: string): Target | undefined {
    return this.#targets.get(id);
  }

  /**
   * The version a call goes to, as the gateway chooses it: the highest
   * version matching `range` that has a passing instance; without a range, the
   * service's stable version, or the highest passing one for a service
   * registered only from outside.
   */
  route(range: string | undefined): Route {
    const key = range ?? '';
    const known = this.#routes.get(key);
    if (known !== undefined) return known;
    const view = this.#view;
    const instances = view?.instances ?? [];
    const versions = [...new Set(instances.map((i) => i.version))].sort((a, b) => (semver.valid(a) && semver.valid(b) ? semver.rcompare(a, b) : b.localeCompare(a)));
    let version: string | undefined;
    if (range !== undefined && range !== '') {
      const valid = semver.validRange(range);
      if (valid === null) throw new BerthError('BERTH_ERR_BAD_VERSION', `version "${range}" of ${this.name} is not a semver range (^2, 1.x, >=1.2 <2)`);
      version = versions.find((v) => semver.satisfies(v, valid));
      if (version === undefined) throw new BerthError('BERTH_ERR_NO_INSTANCE', `no passing instance of ${this.name} matches version ${range}`);
    } else if (view?.stable) {
      version = view.stable;
      if (!versions.includes(version)) throw new BerthError('BERTH_ERR_NO_INSTANCE', `no passing instance of ${this.name}@${version} (its stable version)`);
    } else {
      version = versions[0];
      if (version === undefined) throw new BerthError('BERTH_ERR_NO_INSTANCE', `no passing instance of ${this.name}`);
    }
    const targets = instances.filter((i) => i.version === version).map((i) => this.#targets.get(i.id)!);
    const route: Route = {
      version,
      balancer: createBalancer({ kind: this.policies.balancer }, targets, { random: this.#random, slowStartMs: this.policies.slowStartMs }),
      size: targets.length,
    };
    if (this.#routes.size >= MAX_ROUTES) this.#routes.clear();
    this.#routes.set(key, route);
    return route;
  }
}
