/**
 * Restart backoff: exponential with jitter, as PM2's exp_backoff_restart_delay
 * (×1.5 up to 15 s) but jittered so that instances of one service that crash
 * together do not restart in lockstep against a shared dependency.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Fraction of the delay that is randomised: 0.2 → the delay is in [0.8d, d]. */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  readonly #options: Required<BackoffOptions>;
  #attempt = 0;

  constructor(options: BackoffOptions) {
    this.#options = { jitter: 0.2, random: Math.random, ...options };
  }

  /** Attempts made since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The delay before the next attempt; each call moves one step up the curve. */
  next(): number {
    const { initialMs, maxMs, factor, jitter, random } = this.#options;
    const base = Math.min(maxMs, initialMs * factor ** this.#attempt);
    this.#attempt++;
    return Math.round(base * (1 - jitter * random()));
  }

  reset(): void {
    this.#attempt = 0;
  }
}
