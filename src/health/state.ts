import type { CheckResult } from '../catalog/types.js';
import type { Clock } from '../clock.js';
import type { HealthSpec } from '../manifest/types.js';

/** The part of an instance's status that its checks decide; the supervisor adds draining, stopped and failed. */
export type HealthStatus = 'starting' | 'passing' | 'warning' | 'critical';

export interface HealthTransition {
  from: HealthStatus;
  to: HealthStatus;
}

export type HealthThresholds = Pick<HealthSpec, 'healthyThreshold' | 'unhealthyThreshold' | 'startPeriodMs' | 'restartAfterMs'>;

/**
 * Turns a stream of check results into an instance's health: rise/fall
 * thresholds (HAProxy, Kubernetes), a start period (Docker), and the moment a
 * critical instance is due for a restart. No I/O: the monitor feeds it.
 *
 * Invariants (property-tested):
 * - never `passing` before a passing result since construction or `reset()`;
 * - `critical` only after `unhealthyThreshold` consecutive counted failures;
 * - `restartDue` only after `restartAfterMs` of uninterrupted `critical`.
 */
export class HealthState {
  readonly #spec: HealthThresholds;
  readonly #clock: Pick<Clock, 'now'>;
  #status: HealthStatus = 'starting';
  #successes = 0;
  #failures = 0;
  #startedAt: number;
  /** Set by the first passing result: once an instance has answered, its failures count (Docker's rule). */
  #started = false;
  #criticalSince: number | undefined;

  constructor(spec: HealthThresholds, clock: Pick<Clock, 'now'>) {
    this.#spec = spec;
    this.#clock = clock;
    this.#startedAt = clock.now();
  }

  get status(): HealthStatus {
    return this.#status;
  }

  /** Clock time the current critical spell began; undefined when not critical. */
  get criticalSince(): number | undefined {
    return this.#criticalSince;
  }

  get consecutiveSuccesses(): number {
    return this.#successes;
  }

  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** Whether a failure now would be ignored: inside `startPeriodMs` of the (re)start and no pass yet. */
  inStartPeriod(now = this.#clock.now()): boolean {
    return !this.#started && now - this.#startedAt < this.#spec.startPeriodMs;
  }

  /** Feeds one result; returns the status change it caused, if any. */
  observe(result: Pick<CheckResult, 'status'>): HealthTransition | undefined {
    const now = this.#clock.now();
    switch (result.status) {
      case 'passing':
        this.#started = true;
        this.#failures = 0;
        this.#successes++;
        if (this.#successes >= Math.max(1, this.#spec.healthyThreshold)) return this.#moveTo('passing', now);
        return undefined;
      case 'warning':
        this.#successes = 0;
        this.#failures = 0;
        return this.#moveTo('warning', now);
      case 'critical':
        this.#successes = 0;
        if (this.inStartPeriod(now)) return undefined;
        this.#failures++;
        if (this.#failures >= Math.max(1, this.#spec.unhealthyThreshold)) return this.#moveTo('critical', now);
        return undefined;
    }
  }

  /** Clock time at which the current critical spell makes a restart due; undefined when not critical. */
  restartDueAt(): number | undefined {
    return this.#criticalSince === undefined ? undefined : this.#criticalSince + this.#spec.restartAfterMs;
  }

  /** True once the instance has been critical, without a break, for at least `restartAfterMs`. */
  restartDue(now = this.#clock.now()): boolean {
    const dueAt = this.restartDueAt();
    return dueAt !== undefined && now >= dueAt;
  }

  /** A new process runs: back to `starting`, counters cleared, a new start period begins. */
  reset(): void {
    this.#status = 'starting';
    this.#successes = 0;
    this.#failures = 0;
    this.#started = false;
    this.#startedAt = this.#clock.now();
    this.#criticalSince = undefined;
  }

  #moveTo(to: HealthStatus, now: number): HealthTransition | undefined {
    const from = this.#status;
    if (from === to) return undefined;
    this.#status = to;
    this.#criticalSince = to === 'critical' ? now : undefined;
    return { from, to };
  }
}
