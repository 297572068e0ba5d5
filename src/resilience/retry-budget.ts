export interface RetryBudgetConfig {
  ratio: number;
  minConcurrent: number;
  /** The window of the ratio over recent requests (default 10 s). */
  windowMs?: number;
}

export interface RetryBudgetSnapshot {
  active: number;
  retriesActive: number;
  allowed: number;
  granted: number;
  refused: number;
  /** Requests and retries counted over the window (the second rule). */
  windowRequests: number;
  windowRetries: number;
}

/** The window is kept as this many buckets. */
const BUCKETS = 10;

/**
 * Envoy's retry budget: retries in flight at most `ratio` × active requests,
 * but at least `minConcurrent`. A budget that follows the load, unlike a fixed
 * retry count, cannot multiply traffic to a failing instance by the number of
 * attempts, and still lets a quiet route retry.
 *
 * With it, when callers pass the time, a second rule over a sliding window
 * (Finagle's and Linkerd's budget): a retry may also go when the retries of
 * the last `windowMs` stay within `ratio` × the requests of that window. An
 * instance killed under load fails all its in-flight requests at once — more
 * than 20 % of those in flight, often, but a sliver of the last ten seconds' —
 * and those must all be retried; while a service whose every request fails
 * still gets at most `ratio` more tries than requests over the window.
 */
export class RetryBudget {
  readonly #ratio: number;
  readonly #minConcurrent: number;
  #active = 0;
  #retries = 0;
  #granted = 0;
  #refused = 0;
  readonly #bucketMs: number;
  readonly #requests = new Uint32Array(BUCKETS);
  readonly #retried = new Uint32Array(BUCKETS);
  #windowRequests = 0;
  #windowRetries = 0;
  /** The bucket number (time / bucketMs) of the newest bucket. */
  #epoch = Number.NEGATIVE_INFINITY;

  constructor(config: RetryBudgetConfig) {
    const { ratio, minConcurrent } = config;
    if (!(ratio >= 0 && Number.isFinite(ratio))) throw new RangeError(`RetryBudget: ratio must be a non-negative number, got ${ratio}`);
    if (!(Number.isSafeInteger(minConcurrent) && minConcurrent >= 0)) {
      throw new RangeError(`RetryBudget: minConcurrent must be a non-negative integer, got ${minConcurrent}`);
    }
    const windowMs = config.windowMs ?? 10_000;
    if (!(windowMs > 0 && Number.isFinite(windowMs))) throw new RangeError(`RetryBudget: windowMs must be a positive number, got ${windowMs}`);
    this.#ratio = ratio;
    this.#minConcurrent = minConcurrent;
    this.#bucketMs = windowMs / BUCKETS;
  }

  /** A request started; `now` (ms, any monotonic clock) also counts it in the window. */
  requestStarted(now?: number): void {
    this.#active++;
    if (now === undefined) return;
    this.#requests[this.#advance(now)]!++;
    this.#windowRequests++;
  }

  requestFinished(): void {
    if (this.#active > 0) this.#active--;
  }

  /**
   * A retry may start now (counted as active until release()); false when the
   * budget is spent (counted in refused). Given `now`, the window rule may
   * allow what the in-flight rule does not.
   */
  tryAcquire(now?: number): boolean {
    let ok = this.#retries < this.#allowed();
    if (now !== undefined) {
      const bucket = this.#advance(now);
      if (!ok && this.#windowRetries + 1 <= this.#ratio * this.#windowRequests) ok = true;
      if (ok) {
        this.#retried[bucket]!++;
        this.#windowRetries++;
      }
    }
    if (!ok) {
      this.#refused++;
      return false;
    }
    this.#retries++;
    this.#granted++;
    return true;
  }

  release(): void {
    if (this.#retries > 0) this.#retries--;
  }

  snapshot(): RetryBudgetSnapshot {
    return {
      active: this.#active,
      retriesActive: this.#retries,
      allowed: this.#allowed(),
      granted: this.#granted,
      refused: this.#refused,
      windowRequests: this.#windowRequests,
      windowRetries: this.#windowRetries,
    };
  }

  /** Moves the window to `now`, emptying the buckets it leaves behind; returns the current bucket's index. */
  #advance(now: number): number {
    const epoch = Math.floor(now / this.#bucketMs);
    if (epoch > this.#epoch) {
      const steps = epoch - this.#epoch;
      if (steps >= BUCKETS) {
        this.#requests.fill(0);
        this.#retried.fill(0);
        this.#windowRequests = 0;
        this.#windowRetries = 0;
      } else {
        for (let e = this.#epoch + 1; e <= epoch; e++) {
          const i = e % BUCKETS;
          this.#windowRequests -= this.#requests[i]!;
          this.#windowRetries -= this.#retried[i]!;
          this.#requests[i] = 0;
          this.#retried[i] = 0;
        }
      }
      this.#epoch = epoch;
    }
    // A time from before the newest bucket (callers' clocks are read before queuing) counts in the newest.
    return ((this.#epoch % BUCKETS) + BUCKETS) % BUCKETS;
  }

  #allowed(): number {
    return Math.max(this.#minConcurrent, Math.floor(this.#ratio * this.#active));
  }
}
