import type { Clock } from '../clock.js';

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerConfig {
  /** Consecutive failures that open the breaker (0: this rule is off). */
  consecutiveFailures: number;
  /** Failure ratio over the sliding window that opens it, 0 < r <= 1 (0: this rule is off). */
  failureRatio: number;
  /** Length of the sliding window (kept as 10 buckets of windowMs/10). */
  windowMs: number;
  /** Requests in the window below which the ratio rule does not apply. */
  minRequests: number;
  /** First open period; doubles each time it re-opens from half-open, capped at maxOpenMs. Back to openMs once it closes. */
  openMs: number;
  maxOpenMs: number;
  /** Trial requests admitted at once in half-open; that many successes close it, one failure re-opens it. */
  halfOpenRequests: number;
}

export interface BreakerTransition {
  from: BreakerState;
  to: BreakerState;
  reason: string;
  /** Clock time the breaker saw it happen: open → half-open is seen lazily, on the first read after openUntil. */
  at: number;
}

export interface BreakerSnapshot {
  state: BreakerState;
  consecutiveFailures: number;
  /** Results in the sliding window; kept only while the ratio rule is on (0 otherwise). */
  windowRequests: number;
  windowFailures: number;
  openUntil: number | null;
  timesOpened: number;
}

const BUCKETS = 10;

/**
 * A circuit breaker as a plain state machine: it counts results and says
 * whether a request may go. It knows nothing of HTTP, owns no timers,
 * allocates nothing and reads the clock at most once per call, because the
 * gateway calls it once per request.
 */
export class CircuitBreaker {
  readonly #config: BreakerConfig;
  readonly #clock: Pick<Clock, 'now'>;
  readonly #onTransition: ((t: BreakerTransition) => void) | undefined;
  readonly #bucketMs: number;
  // Ring of per-bucket counts plus their running sums, so neither recording a
  // result nor checking the ratio walks the ring.
  readonly #requests = new Uint32Array(BUCKETS);
  readonly #failures = new Uint32Array(BUCKETS);
  #windowRequests = 0;
  #windowFailures = 0;
  // The current bucket, counted from the clock's zero: floor(now / bucketMs),
  // and its slot in the ring, kept apart because epoch % 10 is a float64
  // modulo, a C call that cost more than the rest of onSuccess together.
  #epoch: number;
  #head = 0;
  // The window costs a clock read per result: it is kept only for the rule that uses it.
  readonly #windowed: boolean;

  #state: BreakerState = 'closed';
  #consecutive = 0;
  #openUntil = 0;
  #openPeriod: number;
  #timesOpened = 0;
  // Trials admitted in this half-open period, less the cancelled ones. A
  // verdict does not give its slot back: results carry no token, so a success
  // that arrives late from a request admitted while closed would otherwise
  // free a slot no trial held, and let one trial too many through. The
  // period needs halfOpenRequests successes, so it never runs out of slots.
  #trials = 0;
  #trialSuccesses = 0;

  constructor(config: BreakerConfig, clock: Pick<Clock, 'now'>, onTransition?: (t: BreakerTransition) => void) {
    validate(config);
    this.#config = { ...config };
    this.#clock = clock;
    this.#onTransition = onTransition;
    this.#bucketMs = config.windowMs / BUCKETS;
    this.#epoch = Math.floor(clock.now() / this.#bucketMs);
    this.#windowed = config.failureRatio > 0;
    this.#openPeriod = config.openMs;
  }

  /** open → half-open happens lazily when read after openUntil (no timers). */
  get state(): BreakerState {
    if (this.#state === 'open') this.#expireOpen(this.#clock.now());
    return this.#state;
  }

  /** Whether a request may go now. In half-open it admits up to halfOpenRequests trials at once (each must end with onSuccess/onFailure/onCancel). */
  tryAcquire(): boolean {
    switch (this.#state) {
      case 'closed':
        return true;
      case 'open':
        if (!this.#expireOpen(this.#clock.now())) return false;
        break;
      case 'half-open':
        break;
    }
    if (this.#trials >= this.#config.halfOpenRequests) return false;
    this.#trials++;
    return true;
  }

  onSuccess(): void {
    if (this.#state === 'closed') {
      this.#consecutive = 0;
      if (this.#windowed) this.#record(this.#clock.now(), 0);
      return;
    }
    const now = this.#clock.now();
    // A result from a request admitted before the breaker opened says nothing
    // about the instance now; it counts only once the breaker is half-open,
    // where any success is evidence of recovery.
    if (this.#state === 'open' && !this.#expireOpen(now)) return;
    const needed = this.#config.halfOpenRequests;
    if (++this.#trialSuccesses >= needed) {
      this.#close(now, needed === 1 ? '1 trial succeeded' : `${needed} trials succeeded`);
    }
  }

  onFailure(): void {
    switch (this.#state) {
      case 'closed': {
        const now = this.#clock.now();
        this.#consecutive++;
        if (this.#windowed) this.#record(now, 1);
        const reason = this.#tripReason();
        if (reason !== undefined) this.#open(now, this.#config.openMs, reason);
        return;
      }
      case 'open': {
        const now = this.#clock.now();
        if (this.#expireOpen(now)) this.#reopen(now);
        return;
      }
      case 'half-open':
        this.#reopen(this.#clock.now());
        return;
    }
  }

  /** An admitted request ended without a verdict (the client left): frees its half-open slot, counts nothing. */
  onCancel(): void {
    if (this.#state === 'half-open' && this.#trials > 0) this.#trials--;
  }

  snapshot(): BreakerSnapshot {
    const now = this.#clock.now();
    if (this.#state === 'open') this.#expireOpen(now);
    this.#roll(now);
    return {
      state: this.#state,
      consecutiveFailures: this.#consecutive,
      windowRequests: this.#windowRequests,
      windowFailures: this.#windowFailures,
      openUntil: this.#state === 'open' ? this.#openUntil : null,
      timesOpened: this.#timesOpened,
    };
  }

  // open → half-open once the open period is over; true if it is now half-open.
  #expireOpen(now: number): boolean {
    if (now < this.#openUntil) return false;
    this.#trials = 0;
    this.#trialSuccesses = 0;
    this.#transition('half-open', `open for ${this.#openPeriod}ms`, now);
    return true;
  }

  #tripReason(): string | undefined {
    const { consecutiveFailures, failureRatio, minRequests, windowMs } = this.#config;
    if (consecutiveFailures > 0 && this.#consecutive >= consecutiveFailures) {
      return consecutiveFailures === 1 ? '1 consecutive failure' : `${consecutiveFailures} consecutive failures`;
    }
    const requests = this.#windowRequests;
    // A division, not failures >= ratio × requests: 0.7 × 10 is 7.000000000000001 in floating point.
    if (failureRatio > 0 && requests >= minRequests && this.#windowFailures / requests >= failureRatio) {
      const ratio = (this.#windowFailures / requests).toFixed(2);
      return `failure ratio ${ratio} over ${formatWindow(windowMs)} (${requests} ${requests === 1 ? 'request' : 'requests'})`;
    }
    return undefined;
  }

  #reopen(now: number): void {
    this.#open(now, Math.min(this.#config.maxOpenMs, this.#openPeriod * 2), 'trial failed');
  }

  #open(now: number, period: number, reason: string): void {
    this.#openPeriod = period;
    this.#openUntil = now + period;
    this.#timesOpened++;
    this.#transition('open', reason, now);
  }

  #close(now: number, reason: string): void {
    // Old failures must not re-open a breaker that has just seen the instance recover.
    this.#consecutive = 0;
    this.#requests.fill(0);
    this.#failures.fill(0);
    this.#windowRequests = 0;
    this.#windowFailures = 0;
    this.#openPeriod = this.#config.openMs;
    this.#transition('closed', reason, now);
  }

  #transition(to: BreakerState, reason: string, at: number): void {
    const from = this.#state;
    this.#state = to;
    this.#onTransition?.({ from, to, reason, at });
  }

  #record(now: number, failed: 0 | 1): void {
    this.#roll(now);
    const i = this.#head;
    this.#requests[i]!++;
    this.#failures[i]! += failed;
    this.#windowRequests++;
    this.#windowFailures += failed;
  }

  #roll(now: number): void {
    const epoch = Math.floor(now / this.#bucketMs);
    // Same bucket, or the wall clock stepped back: keep counting into the current one.
    if (epoch <= this.#epoch) return;
    if (epoch - this.#epoch >= BUCKETS) {
      // Idle for a whole window or more: everything has expired, whatever the gap.
      this.#requests.fill(0);
      this.#failures.fill(0);
      this.#windowRequests = 0;
      this.#windowFailures = 0;
    } else {
      let i = this.#head;
      for (let e = this.#epoch; e < epoch; e++) {
        i = i === BUCKETS - 1 ? 0 : i + 1;
        this.#windowRequests -= this.#requests[i]!;
        this.#windowFailures -= this.#failures[i]!;
        this.#requests[i] = 0;
        this.#failures[i] = 0;
      }
      this.#head = i;
    }
    this.#epoch = epoch;
  }
}

function formatWindow(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function validate(c: BreakerConfig): void {
  const fail = (rule: string, got: number): never => {
    throw new RangeError(`CircuitBreaker: ${rule}, got ${got}`);
  };
  if (!isCount(c.consecutiveFailures)) fail('consecutiveFailures must be a non-negative integer', c.consecutiveFailures);
  if (!(c.failureRatio >= 0 && c.failureRatio <= 1)) fail('failureRatio must be in [0, 1]', c.failureRatio);
  if (!(c.windowMs > 0 && Number.isFinite(c.windowMs))) fail('windowMs must be a positive number', c.windowMs);
  if (!isCount(c.minRequests)) fail('minRequests must be a non-negative integer', c.minRequests);
  if (!(c.openMs > 0 && Number.isFinite(c.openMs))) fail('openMs must be a positive number', c.openMs);
  if (!(c.maxOpenMs >= c.openMs && Number.isFinite(c.maxOpenMs))) fail('maxOpenMs must be a number >= openMs', c.maxOpenMs);
  if (!(isCount(c.halfOpenRequests) && c.halfOpenRequests >= 1)) fail('halfOpenRequests must be a positive integer', c.halfOpenRequests);
}

function isCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}
