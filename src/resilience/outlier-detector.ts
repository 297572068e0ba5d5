import type { Clock, Timer } from '../clock.js';

/** 'error': the instance answered 5xx. 'gateway-error': connect refused, reset before a response, or timeout. */
export type OutcomeKind = 'success' | 'error' | 'gateway-error';

export interface OutlierConfig {
  /** Consecutive 5xx answers that eject an instance (0: rule off). */
  consecutiveErrors: number;
  /** Consecutive gateway errors (connect, reset, timeout) that eject it (0: rule off). */
  consecutiveGatewayErrors: number;
  /** The n-th ejection of an instance lasts baseEjectionMs × n, capped at maxEjectionMs. */
  baseEjectionMs: number;
  maxEjectionMs: number;
  /** At most this share of the instances is ejected at once (but one may always be, when there are at least two). */
  maxEjectedPercent: number;
  /** Latency outliers: an instance whose recent latency exceeds factor × the median of its siblings' and minMs is ejected; null: rule off. Needs minRequests recent samples on the instance and on at least one sibling. */
  latency: { factor: number; minMs: number; minRequests: number } | null;
  /** When fewer than this percent of the instances are left un-ejected, route over all of them (panic, Envoy's 50%). 0: never. */
  panicThresholdPercent: number;
}

export type OutlierReason = 'consecutive-errors' | 'consecutive-gateway-errors' | 'latency';

export interface OutlierEvent {
  instance: string;
  kind: 'ejected' | 'returned';
  reason?: OutlierReason;
  /** The ejection multiplier: this is the instance's `times`-th ejection since it last decayed to 0. */
  times: number;
  /** Clock time the ejection ends (ejections only). */
  until?: number;
  at: number;
}

export interface OutlierInstanceSnapshot {
  id: string;
  ejected: boolean;
  until: number | null;
  /** The ejection multiplier as of now, decay included. */
  times: number;
  consecutiveErrors: number;
  consecutiveGatewayErrors: number;
  /** The recent latency average; null without a recent answer. */
  latencyMs: number | null;
  /** Answers in the latency average (0 once it went stale). */
  samples: number;
}

export interface OutlierSnapshot {
  instances: OutlierInstanceSnapshot[];
  ejected: number;
  panic: boolean;
}

/**
 * Weight of each answer in an instance's latency average, so the average
 * covers about its last ten answers. Per answer rather than per unit of time:
 * `minRequests` counts answers, and a per-time decay (Finagle's peak EWMA) lets
 * answers that land in the same millisecond count for nothing.
 */
const LATENCY_WEIGHT = 0.1;
/**
 * An average with no answer for this long says nothing about the instance now
 * (Envoy's default detection interval): its next answer starts it over, and it
 * stops counting as a sibling.
 */
const LATENCY_STALE_MS = 10_000;
/**
 * Siblings' medians are recomputed at most this often, so that a record costs
 * O(1) and a refresh O(n log n) a few times a second. They are also recomputed
 * at once when the set of comparable instances changes (ejection, return, an
 * instance reaching minRequests, setInstances): those events are rare.
 */
const MEDIAN_REFRESH_MS = 100;

class InstanceState {
  consecutiveErrors = 0;
  consecutiveGatewayErrors = 0;
  ejected = false;
  until = 0;
  times = 0;
  /** Clock time of the last return; the multiplier decays from there. */
  returnedAt: number | null = null;
  timer: Timer | null = null;
  // Bias-corrected EWMA: sum / weight, so the first answer is the average
  // instead of being pulled towards 0.
  latencySum = 0;
  latencyWeight = 0;
  latencyMs = 0;
  samples = 0;
  lastSampleAt = 0;
  /** Median latency of the comparable siblings at the last refresh; NaN when there were none. */
  siblingMedian = Number.NaN;

  constructor(
    readonly id: string,
    /** Made once per instance so that an ejection's timer allocates no closure. */
    readonly returnFromEjection: () => void,
  ) {}

  resetLatency(): void {
    this.latencySum = 0;
    this.latencyWeight = 0;
    this.latencyMs = 0;
    this.samples = 0;
  }
}

/**
 * Passive outlier detection for the instances of one service version, as
 * Envoy's: the gateway reports each request's outcome, and an instance that
 * fails in a row, or answers far slower than its siblings, is ejected for a
 * while. Knows nothing of HTTP; owns one timer per ejected instance (its
 * return), none per request.
 *
 * Invariants (property-tested):
 * - at most max(1, ⌊n × maxEjectedPercent / 100⌋) instances are ejected at once, and none when n < 2;
 * - every ejected instance has exactly one pending timer, and no other timer exists.
 */
export class OutlierDetector {
  readonly #config: OutlierConfig;
  readonly #clock: Clock;
  readonly #onChange: ((event: OutlierEvent) => void) | undefined;
  readonly #instances = new Map<string, InstanceState>();
  #ejected = 0;
  #maxEjected = 0;
  #closed = false;
  #mediansAt = Number.NEGATIVE_INFINITY;
  #mediansDirty = true;
  /** Reused by each refresh. */
  readonly #comparable: InstanceState[] = [];

  constructor(config: OutlierConfig, clock: Clock, onChange?: (event: OutlierEvent) => void) {
    validate(config);
    this.#config = { ...config, latency: config.latency === null ? null : { ...config.latency } };
    this.#clock = clock;
    this.#onChange = onChange;
  }

  /** The current instances (ids); ids no longer listed are forgotten (their timers cleared), new ones start clean, known ones keep their state. */
  setInstances(ids: readonly string[]): void {
    const listed = new Set(ids);
    for (const [id, state] of this.#instances) {
      if (listed.has(id)) continue;
      if (state.timer !== null) this.#clock.clearTimeout(state.timer);
      if (state.ejected) this.#ejected--;
      this.#instances.delete(id);
    }
    for (const id of listed) {
      if (this.#instances.has(id)) continue;
      const state: InstanceState = new InstanceState(id, () => this.#return(state, this.#clock.now()));
      this.#instances.set(id, state);
    }
    const n = this.#instances.size;
    this.#maxEjected = n < 2 ? 0 : Math.max(1, Math.floor((n * this.#config.maxEjectedPercent) / 100));
    this.#mediansDirty = true;
    // A shrunk set may hold more ejections than it allows (the only instance
    // left may be an ejected one): the ones due back soonest return now, so the
    // limit holds at all times rather than only for new ejections.
    while (this.#ejected > this.#maxEjected) {
      let soonest: InstanceState | undefined;
      for (const state of this.#instances.values()) {
        if (state.ejected && (soonest === undefined || state.until < soonest.until)) soonest = state;
      }
      if (soonest === undefined) break;
      this.#return(soonest, this.#clock.now());
    }
  }

  /** One request's outcome. Called once per request: O(1), no allocation, no timer, one clock read at most. */
  record(id: string, kind: OutcomeKind, latencyMs: number): void {
    if (this.#closed) return;
    const state = this.#instances.get(id);
    if (state === undefined) return;
    switch (kind) {
      case 'success':
        state.consecutiveErrors = 0;
        state.consecutiveGatewayErrors = 0;
        break;
      case 'error':
        state.consecutiveErrors++;
        break;
      case 'gateway-error':
        // A gateway failure is also a failure: it counts towards both rules.
        state.consecutiveErrors++;
        state.consecutiveGatewayErrors++;
        break;
    }

    const rule = this.#config.latency;
    let now = Number.NaN;
    // A gateway error's "latency" is the connect time or the timeout setting,
    // not how fast the instance answers: only answers feed the average.
    if (rule !== null && kind !== 'gateway-error' && latencyMs >= 0 && latencyMs < Number.POSITIVE_INFINITY) {
      now = this.#clock.now();
      this.#sample(state, latencyMs, now, rule.minRequests);
    }
    // Requests that were in flight when the instance was ejected still count,
    // but cannot eject it again.
    if (state.ejected) return;

    let reason: OutlierReason | undefined;
    const { consecutiveErrors, consecutiveGatewayErrors } = this.#config;
    if (kind === 'gateway-error' && consecutiveGatewayErrors > 0 && state.consecutiveGatewayErrors >= consecutiveGatewayErrors) {
      reason = 'consecutive-gateway-errors';
    } else if (kind !== 'success' && consecutiveErrors > 0 && state.consecutiveErrors >= consecutiveErrors) {
      reason = 'consecutive-errors';
    } else if (rule !== null && !Number.isNaN(now) && state.samples >= rule.minRequests && state.latencyMs > rule.minMs) {
      if (this.#mediansDirty || now - this.#mediansAt >= MEDIAN_REFRESH_MS) this.#refreshMedians(now, rule.minRequests);
      // NaN (no comparable sibling) compares false.
      if (state.latencyMs > rule.factor * state.siblingMedian) reason = 'latency';
    }
    if (reason !== undefined) this.#eject(state, reason, Number.isNaN(now) ? this.#clock.now() : now);
  }

  isEjected(id: string): boolean {
    return this.#instances.get(id)?.ejected ?? false;
  }

  /** True when the un-ejected share is below panicThresholdPercent: the caller should then balance over all instances. */
  get panic(): boolean {
    const n = this.#instances.size;
    const threshold = this.#config.panicThresholdPercent;
    if (n === 0 || threshold <= 0) return false;
    return ((n - this.#ejected) * 100) / n < threshold;
  }

  snapshot(): OutlierSnapshot {
    const now = this.#clock.now();
    const instances: OutlierInstanceSnapshot[] = [];
    for (const state of this.#instances.values()) {
      const fresh = state.samples > 0 && now - state.lastSampleAt <= LATENCY_STALE_MS;
      instances.push({
        id: state.id,
        ejected: state.ejected,
        until: state.ejected ? state.until : null,
        times: this.#decayedTimes(state, now),
        consecutiveErrors: state.consecutiveErrors,
        consecutiveGatewayErrors: state.consecutiveGatewayErrors,
        latencyMs: fresh ? state.latencyMs : null,
        samples: fresh ? state.samples : 0,
      });
    }
    return { instances, ejected: this.#ejected, panic: this.panic };
  }

  /** Clears every timer (returns). The last state stays readable; later records are ignored, so no new timer starts. */
  close(): void {
    this.#closed = true;
    for (const state of this.#instances.values()) {
      if (state.timer === null) continue;
      this.#clock.clearTimeout(state.timer);
      state.timer = null;
    }
  }

  #sample(state: InstanceState, latencyMs: number, now: number, minRequests: number): void {
    if (state.samples > 0 && now - state.lastSampleAt > LATENCY_STALE_MS) {
      if (state.samples >= minRequests) this.#mediansDirty = true;
      state.resetLatency();
    }
    state.latencySum = state.latencySum * (1 - LATENCY_WEIGHT) + latencyMs;
    state.latencyWeight = state.latencyWeight * (1 - LATENCY_WEIGHT) + 1;
    state.latencyMs = state.latencySum / state.latencyWeight;
    state.lastSampleAt = now;
    // Becoming comparable changes the siblings' medians: recompute on the next check.
    if (++state.samples === minRequests) this.#mediansDirty = true;
  }

  // Sorts the comparable instances (un-ejected, minRequests fresh answers) by
  // latency once, then gives each instance the median of the others in O(1):
  // the comparable ones skip their own rank, the rest see the whole set.
  #refreshMedians(now: number, minRequests: number): void {
    this.#mediansAt = now;
    this.#mediansDirty = false;
    const sorted = this.#comparable;
    sorted.length = 0;
    for (const state of this.#instances.values()) {
      if (!state.ejected && state.samples >= minRequests && now - state.lastSampleAt <= LATENCY_STALE_MS) sorted.push(state);
    }
    sorted.sort(byLatency);
    const all = medianSkipping(sorted, -1);
    for (const state of this.#instances.values()) state.siblingMedian = all;
    for (let rank = 0; rank < sorted.length; rank++) sorted[rank]!.siblingMedian = medianSkipping(sorted, rank);
  }

  #eject(state: InstanceState, reason: OutlierReason, now: number): void {
    // Refused by the limit: the counters stay as they are, so the instance's
    // next failure tries again, and is ejected if a sibling has returned by then.
    if (this.#ejected + 1 > this.#maxEjected) return;
    const { baseEjectionMs, maxEjectionMs } = this.#config;
    state.times = this.#decayedTimes(state, now) + 1;
    const ms = Math.min(baseEjectionMs * state.times, maxEjectionMs);
    state.ejected = true;
    state.until = now + ms;
    state.consecutiveErrors = 0;
    state.consecutiveGatewayErrors = 0;
    state.resetLatency();
    state.timer = this.#clock.setTimeout(state.returnFromEjection, ms);
    this.#ejected++;
    this.#mediansDirty = true;
    this.#emit({ instance: state.id, kind: 'ejected', reason, times: state.times, until: state.until, at: now });
  }

  #return(state: InstanceState, now: number): void {
    if (!state.ejected) return;
    if (state.timer !== null) this.#clock.clearTimeout(state.timer);
    state.timer = null;
    state.ejected = false;
    state.returnedAt = now;
    this.#ejected--;
    this.#mediansDirty = true;
    this.#emit({ instance: state.id, kind: 'returned', times: state.times, at: now });
  }

  // Envoy lowers the multiplier by one for each base period an instance stays
  // un-ejected; computed when needed instead of by a periodic sweep.
  #decayedTimes(state: InstanceState, now: number): number {
    if (state.ejected || state.returnedAt === null || state.times === 0) return state.times;
    const periods = Math.floor((now - state.returnedAt) / this.#config.baseEjectionMs);
    return Math.max(0, state.times - periods);
  }

  #emit(event: OutlierEvent): void {
    if (this.#onChange === undefined) return;
    try {
      this.#onChange(event);
    } catch {
      // A listener's bug (a metrics or log sink) must not leave an instance
      // half-ejected or stop the return timer's bookkeeping.
    }
  }
}

function byLatency(a: InstanceState, b: InstanceState): number {
  return a.latencyMs - b.latencyMs;
}

/** Median latency of `sorted` without the instance at rank `skip` (-1: skip none); NaN when nothing is left. */
function medianSkipping(sorted: readonly InstanceState[], skip: number): number {
  const count = skip < 0 ? sorted.length : sorted.length - 1;
  if (count <= 0) return Number.NaN;
  const at = (rank: number): number => sorted[skip >= 0 && rank >= skip ? rank + 1 : rank]!.latencyMs;
  const mid = count >> 1;
  return count % 2 === 1 ? at(mid) : (at(mid - 1) + at(mid)) / 2;
}

function validate(config: OutlierConfig): void {
  const { consecutiveErrors, consecutiveGatewayErrors, baseEjectionMs, maxEjectionMs, maxEjectedPercent, latency, panicThresholdPercent } = config;
  const problems: string[] = [];
  if (!Number.isSafeInteger(consecutiveErrors) || consecutiveErrors < 0) problems.push(`consecutiveErrors must be a non-negative integer, got ${consecutiveErrors}`);
  if (!Number.isSafeInteger(consecutiveGatewayErrors) || consecutiveGatewayErrors < 0) {
    problems.push(`consecutiveGatewayErrors must be a non-negative integer, got ${consecutiveGatewayErrors}`);
  }
  if (!(baseEjectionMs > 0 && Number.isFinite(baseEjectionMs))) problems.push(`baseEjectionMs must be > 0, got ${baseEjectionMs}`);
  if (!(maxEjectionMs > 0 && Number.isFinite(maxEjectionMs))) problems.push(`maxEjectionMs must be > 0, got ${maxEjectionMs}`);
  if (!(maxEjectedPercent >= 0 && maxEjectedPercent <= 100)) problems.push(`maxEjectedPercent must be within 0..100, got ${maxEjectedPercent}`);
  if (!(panicThresholdPercent >= 0 && panicThresholdPercent <= 100)) problems.push(`panicThresholdPercent must be within 0..100, got ${panicThresholdPercent}`);
  if (latency !== null) {
    // factor <= 1 would eject every instance slower than the median: half of a healthy set.
    if (!(latency.factor > 1 && Number.isFinite(latency.factor))) problems.push(`latency.factor must be above 1, got ${latency.factor}`);
    if (!(latency.minMs >= 0 && Number.isFinite(latency.minMs))) problems.push(`latency.minMs must be >= 0, got ${latency.minMs}`);
    if (!Number.isSafeInteger(latency.minRequests) || latency.minRequests < 1) problems.push(`latency.minRequests must be a positive integer, got ${latency.minRequests}`);
  }
  if (problems.length > 0) throw new RangeError(`OutlierDetector: ${problems.join('; ')}`);
}
