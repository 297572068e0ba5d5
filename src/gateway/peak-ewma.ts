import { BerthError } from '../errors.js';

export interface PeakEwmaConfig {
  /** Time constant of the decay. */
  decayMs: number;
  /** Estimate of an instance never observed. */
  defaultRttMs: number;
  /** A failed request counts as an RTT at least this many times the current estimate. */
  failureFactor: number;
}

/**
 * linkerd2-proxy's decay and default (10 s, 30 ms): an instance's past fades
 * within seconds, not per request, and a new instance starts as "ordinary" rather
 * than as the fastest. A failure counts as at least the current estimate: an
 * instance that fails fast must not look like the fastest and draw the traffic
 * (the black hole a plain latency balancer makes of it), yet it keeps its share
 * until its breaker and outlier detection, which see its run of failures, take
 * it out, visibly. (Measured in the chaos tests: a penalty that doubled the
 * estimate, or a fixed 1 s one, hid a failing instance after two or three
 * failures, so it was never ejected and kept getting a probe and failing it.)
 */
export const DEFAULT_PEAK_EWMA: Readonly<PeakEwmaConfig> = { decayMs: 10_000, defaultRttMs: 30, failureFactor: 1 };

/**
 * Peak EWMA latency estimate (Finagle, linkerd2-proxy): a slower response
 * raises the estimate at once, a faster one only pulls it down gradually, so
 * an instance that starts to struggle is avoided on its first slow response
 * and trusted again only after it has been fast for a while.
 *
 * Time is passed in (ms, the gateway's `performance.now()`) so a request reads
 * the clock once. Reading the estimate changes nothing: how often pickers look
 * does not change how much weight the next observation gets.
 */
export class PeakEwma {
  readonly #decayMs: number;
  readonly #failureFactor: number;
  #cost: number;
  #stamp: number;

  constructor(config: PeakEwmaConfig, now: number) {
    const { decayMs, defaultRttMs, failureFactor } = config;
    // The manifest validates what users write; reaching here with nonsense is a bug.
    if (!(decayMs > 0) || !Number.isFinite(decayMs) || !(defaultRttMs >= 0) || !Number.isFinite(defaultRttMs) || !(failureFactor >= 1) || !Number.isFinite(failureFactor)) {
      throw new BerthError('BERTH_ERR_INTERNAL', `invalid peak EWMA config ${JSON.stringify(config)}`);
    }
    this.#decayMs = decayMs;
    this.#failureFactor = failureFactor;
    this.#cost = defaultRttMs;
    this.#stamp = now;
  }

  /** A finished request: a higher RTT replaces the estimate at once (peak), a lower one is averaged in with weight exp(-elapsed/decay). */
  observe(rttMs: number, failed: boolean, now: number): void {
    // A negative or NaN RTT (a clock misread) counts as 0 rather than poisoning the estimate.
    let rtt = rttMs > 0 ? rttMs : 0;
    if (failed) {
      const penalised = this.estimate(now) * this.#failureFactor;
      if (rtt < penalised) rtt = penalised;
    }
    if (rtt > this.#cost) {
      this.#cost = rtt;
    } else {
      const elapsed = now > this.#stamp ? now - this.#stamp : 0;
      const w = Math.exp(-elapsed / this.#decayMs);
      this.#cost = this.#cost * w + rtt * (1 - w);
    }
    // Finished requests may be reported out of order; the stamp never goes back.
    if (now > this.#stamp) this.#stamp = now;
  }

  /** The estimate decayed toward 0 for the time since the last observation (so an idle or penalised instance is probed again). */
  estimate(now: number): number {
    const elapsed = now > this.#stamp ? now - this.#stamp : 0;
    return this.#cost * Math.exp(-elapsed / this.#decayMs);
  }
}
