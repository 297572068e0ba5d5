import type { BreakerSpec } from '../manifest/types.js';
import type { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { DEFAULT_PEAK_EWMA, PeakEwma, type PeakEwmaConfig } from './peak-ewma.js';

export interface TargetOptions extends Partial<PeakEwmaConfig> {
  /**
   * The clock reading at construction (ms, `performance.now()`, the clock the
   * gateway passes to `pick` and `observe`): the EWMA's start and the first
   * `passingSince`. Default: `performance.now()`, never 0 — a target stamped 0
   * would look idle for the whole uptime (estimate ≈ 0, slow start over).
   */
  now?: number;
  /** Reached over TLS (the service's `tls:`): an https:// origin. */
  secure?: boolean;
}

/**
 * One instance as the gateway sees it. Targets outlive route tables: a rebuild
 * reuses the target of an instance it already knew, so in-flight counts (for
 * least-request balancing and draining), the latency estimate and the slow
 * start survive the swap.
 */
export class Target {
  readonly id: string;
  readonly origin: string;
  readonly secure: boolean;
  readonly address: string;
  readonly port: number;
  weight: number;
  /** Requests sent to this instance and not finished yet. */
  inflight = 0;
  /** Latency estimate for the peak-ewma balancer; the gateway reports each finished request to it. */
  readonly ewma: PeakEwma;
  /**
   * When the instance (re)entered rotation, on the clock of `now`: the start
   * of its slow start. Set by whoever puts it back (a passing check after a
   * failing one, an outlier ejection ending).
   */
  passingSince: number;
  /** The instance's circuit breaker (null when the service's policies turn it off); its service equips it. */
  breaker: CircuitBreaker | null = null;
  /** The settings `breaker` was built with, so a reload that keeps them keeps its state. */
  breakerSpec: BreakerSpec | null = null;
  /** Whether the route table in force balances over it (false once it left rotation). */
  routed = false;
  #idle: (() => void)[] = [];

  constructor(id: string, address: string, port: number, weight: number, options: TargetOptions = {}) {
    this.id = id;
    this.address = address;
    this.port = port;
    this.weight = weight;
    this.secure = options.secure ?? false;
    this.origin = `${this.secure ? 'https' : 'http'}://${address.includes(':') ? `[${address}]` : address}:${port}`;
    const now = options.now ?? performance.now();
    this.passingSince = now;
    this.ewma = new PeakEwma(
      {
        decayMs: options.decayMs ?? DEFAULT_PEAK_EWMA.decayMs,
        defaultRttMs: options.defaultRttMs ?? DEFAULT_PEAK_EWMA.defaultRttMs,
        failureFactor: options.failureFactor ?? DEFAULT_PEAK_EWMA.failureFactor,
      },
      now,
    );
  }

  acquire(): void {
    this.inflight++;
  }

  release(): void {
    if (--this.inflight === 0 && this.#idle.length > 0) {
      const waiters = this.#idle;
      this.#idle = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no request is in flight (at once if none is). */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}
