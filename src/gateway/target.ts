/**
 * One instance as the gateway sees it. Targets outlive route tables: a rebuild
 * reuses the target of an instance it already knew, so in-flight counts (for
 * least-request balancing and draining) survive the swap.
 */
export class Target {
  readonly id: string;
  readonly origin: string;
  readonly address: string;
  readonly port: number;
  weight: number;
  /** Requests sent to this instance and not finished yet. */
  inflight = 0;
  #idle: (() => void)[] = [];

  constructor(id: string, address: string, port: number, weight: number) {
    this.id = id;
    this.address = address;
    this.port = port;
    this.weight = weight;
    this.origin = `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
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
