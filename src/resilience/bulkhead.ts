export interface BulkheadConfig {
  maxConcurrent: number;
  maxQueue: number;
}

export interface BulkheadSnapshot {
  active: number;
  queued: number;
  rejected: number;
}

// One queued wait. onSlot is null once the wait is over (served or cancelled),
// which is what makes a late cancel a no-op.
class Waiter {
  prev: Waiter | null = null;
  next: Waiter | null = null;
  onSlot: (() => void) | null;

  constructor(onSlot: () => void) {
    this.onSlot = onSlot;
  }
}

/**
 * At most `maxConcurrent` requests at once, and at most `maxQueue` more
 * waiting for a slot, served oldest first. A full bulkhead answers at once
 * rather than letting waits pile up behind a slow instance.
 */
export class Bulkhead {
  readonly #maxConcurrent: number;
  readonly #maxQueue: number;
  #active = 0;
  #rejected = 0;
  // A doubly linked list, not an array: a client that leaves removes its wait
  // in O(1) wherever it is, and a cancelled wait never holds a place in line.
  #head: Waiter | null = null;
  #tail: Waiter | null = null;
  #queued = 0;

  constructor(config: BulkheadConfig) {
    const { maxConcurrent, maxQueue } = config;
    if (!(Number.isSafeInteger(maxConcurrent) && maxConcurrent >= 1)) {
      throw new RangeError(`Bulkhead: maxConcurrent must be a positive integer, got ${maxConcurrent}`);
    }
    if (!(Number.isSafeInteger(maxQueue) && maxQueue >= 0)) {
      throw new RangeError(`Bulkhead: maxQueue must be a non-negative integer, got ${maxQueue}`);
    }
    this.#maxConcurrent = maxConcurrent;
    this.#maxQueue = maxQueue;
  }

  /** Takes a slot now, or false when all are taken. */
  tryAcquire(): boolean {
    if (this.#active >= this.#maxConcurrent) return false;
    this.#active++;
    return true;
  }

  /**
   * Waits for a slot: onSlot runs (the slot already held by the caller) when one frees, oldest first.
   * Returns a cancel function (removes the wait in O(1); no-op once onSlot ran), or undefined when the
   * queue is full (counted in rejected). If a slot is free already, onSlot runs before enqueue returns.
   */
  enqueue(onSlot: () => void): (() => void) | undefined {
    if (this.#active < this.#maxConcurrent) {
      // Nobody would release a slot to wake this wait: take the free one.
      this.#active++;
      onSlot();
      return noop;
    }
    if (this.#queued >= this.#maxQueue) {
      this.#rejected++;
      return undefined;
    }
    const waiter = new Waiter(onSlot);
    if (this.#tail === null) this.#head = waiter;
    else {
      this.#tail.next = waiter;
      waiter.prev = this.#tail;
    }
    this.#tail = waiter;
    this.#queued++;
    return () => {
      if (waiter.onSlot !== null) this.#unlink(waiter);
    };
  }

  /** Frees a slot, handing it straight to the oldest waiter if any. */
  release(): void {
    const waiter = this.#head;
    if (waiter === null) {
      if (this.#active > 0) this.#active--;
      return;
    }
    // The slot passes from the releaser to the waiter without ever being free,
    // so a tryAcquire cannot jump the queue. State is settled before onSlot
    // runs, which may itself release or enqueue.
    const onSlot = waiter.onSlot!;
    this.#unlink(waiter);
    onSlot();
  }

  snapshot(): BulkheadSnapshot {
    return { active: this.#active, queued: this.#queued, rejected: this.#rejected };
  }

  #unlink(waiter: Waiter): void {
    if (waiter.prev === null) this.#head = waiter.next;
    else waiter.prev.next = waiter.next;
    if (waiter.next === null) this.#tail = waiter.prev;
    else waiter.next.prev = waiter.prev;
    waiter.prev = null;
    waiter.next = null;
    waiter.onSlot = null;
    this.#queued--;
  }
}

function noop(): void {}
