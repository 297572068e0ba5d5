import type { Clock, Timer } from '../clock.js';

interface Pending {
  id: number;
  at: number;
  fn: () => void;
}

/** A Clock that only moves when told to: `advance(ms)` fires due timers in order. */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  #pending: Pending[] = [];

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const entry = { id: ++this.#seq, at: this.#now + Math.max(0, ms), fn };
    this.#pending.push(entry);
    return entry;
  }

  clearTimeout(timer: Timer): void {
    this.#pending = this.#pending.filter((p) => p !== timer);
  }

  /** Moves time forward, firing every timer that falls due, earliest first. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const next = this.#pending
        .filter((p) => p.at <= until)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!next) break;
      this.#pending = this.#pending.filter((p) => p !== next);
      this.#now = next.at;
      next.fn();
    }
    this.#now = until;
  }

  /** Moves time forward and lets promise callbacks queued by fired timers run. */
  async tick(ms: number): Promise<void> {
    const until = this.#now + ms;
    for (;;) {
      await flushMicrotasks();
      const next = this.#pending
        .filter((p) => p.at <= until)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!next) break;
      this.#pending = this.#pending.filter((p) => p !== next);
      this.#now = next.at;
      next.fn();
    }
    this.#now = until;
    await flushMicrotasks();
  }

  get pendingTimers(): number {
    return this.#pending.length;
  }
}

async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
