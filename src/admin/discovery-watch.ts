import type { Catalog, CatalogChange } from '../catalog/catalog.js';
import { systemClock, type Clock } from '../clock.js';

/** Response header of discovery: the service's index, for a blocking query's `?index=`. */
export const INDEX_HEADER = 'x-berth-index';
/** Response header of discovery: the service's stable version, when the manifest gives it one. */
export const STABLE_HEADER = 'x-berth-stable';
/** A blocking discovery query waits this long unless it says (`?wait=`), and at most MAX_WAIT_MS. */
export const DEFAULT_WAIT_MS = 30_000;
export const MAX_WAIT_MS = 5 * 60_000;

/** How a blocking discovery query ended. */
export type WaitEnd = 'changed' | 'timeout' | 'aborted' | 'closed';

export interface DiscoveryWatchOptions {
  /** Times the waits. Default: the system clock. */
  clock?: Clock;
  /** Told the number of waiting queries whenever it changes (tests wait on it instead of sleeping). */
  onWaiters?: (count: number) => void;
}

interface Waiter {
  changed: () => boolean;
  end: (how: WaitEnd) => void;
}

interface Tracked {
  /** The catalog revision at which the service's answer last changed (or at which tracking began). */
  index: number;
  /** The answer at that index, serialised: what a change is compared against. */
  key: string;
  waiters: Set<Waiter>;
}

/**
 * Blocking queries on discovery (Consul's `?index=&wait=`): a per-service
 * index that moves only when the service's discovery answer changes, and
 * waits that end when it does. Indexing per service, not by the catalog's
 * revision, matters: every instance's record is rewritten now and then
 * (check refreshes), and a revision-based index would wake every watcher of
 * every service on each of those writes.
 *
 * One catalog subscription for all waits; a wait is removed when it ends,
 * whichever way, so a client that hangs up leaves nothing behind.
 */
export class DiscoveryWatch {
  readonly #catalog: Catalog;
  readonly #answer: (service: string) => unknown;
  readonly #clock: Clock;
  readonly #onWaiters: ((count: number) => void) | undefined;
  readonly #tracked = new Map<string, Tracked>();
  readonly #unsubscribe: () => void;
  #waiting = 0;
  #closed = false;

  /** `answer(service)` is the service's discovery answer (every version): what a change is a change of. */
  constructor(catalog: Catalog, answer: (service: string) => unknown, options: DiscoveryWatchOptions = {}) {
    this.#catalog = catalog;
    this.#answer = answer;
    this.#clock = options.clock ?? systemClock;
    this.#onWaiters = options.onWaiters;
    this.#unsubscribe = catalog.subscribe((change) => this.#onChange(change));
  }

  /** Queries waiting now. */
  get waiting(): number {
    return this.#waiting;
  }

  /** The service's index: the same number as long as its answer is the same. */
  index(service: string): number {
    return this.#track(service).index;
  }

  /**
   * Resolves when the service's index is no longer `index` and `changed()`
   * agrees (a filtered query passes a test of its own answer), after `ms`, when
   * `signal` aborts, or when the watch closes. At once if the index already moved.
   */
  wait(service: string, index: number, ms: number, changed: () => boolean, signal?: AbortSignal): Promise<WaitEnd> {
    if (this.#closed) return Promise.resolve('closed');
    if (signal?.aborted) return Promise.resolve('aborted');
    const tracked = this.#track(service);
    if (tracked.index !== index) return Promise.resolve('changed');
    if (ms <= 0) return Promise.resolve('timeout');
    return new Promise((resolve) => {
      const timer = this.#clock.setTimeout(() => end('timeout'), ms);
      const onAbort = (): void => end('aborted');
      const waiter: Waiter = { changed, end: (how) => end(how) };
      const end = (how: WaitEnd): void => {
        if (!tracked.waiters.delete(waiter)) return;
        this.#clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#count(-1);
        resolve(how);
      };
      tracked.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#count(1);
    });
  }

  /** Ends every wait (`closed`) and stops following the catalog; later waits end at once. For a node that is stopping. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    for (const tracked of this.#tracked.values()) {
      for (const waiter of [...tracked.waiters]) waiter.end('closed');
    }
  }

  #track(service: string): Tracked {
    let tracked = this.#tracked.get(service);
    if (tracked === undefined) {
      // Changes before now were not seen: the answer as it stands gets the revision as it stands.
      tracked = { index: this.#catalog.revision, key: JSON.stringify(this.#answer(service)), waiters: new Set() };
      this.#tracked.set(service, tracked);
    }
    return tracked;
  }

  #onChange(change: CatalogChange): void {
    const { record, previous } = change;
    // Only a passing record, before or after, can change a discovery answer.
    if (record?.status !== 'passing' && previous?.status !== 'passing') return;
    if (record !== undefined) this.#recheck(record.service);
    if (previous !== undefined && previous.service !== record?.service) this.#recheck(previous.service);
  }

  #recheck(service: string): void {
    const tracked = this.#tracked.get(service);
    if (tracked === undefined) return;
    const key = JSON.stringify(this.#answer(service));
    if (key === tracked.key) return;
    tracked.key = key;
    // The catalog has applied the change's revision before telling its subscribers.
    tracked.index = this.#catalog.revision;
    for (const waiter of [...tracked.waiters]) {
      if (waiter.changed()) waiter.end('changed');
    }
  }

  #count(delta: number): void {
    this.#waiting += delta;
    this.#onWaiters?.(this.#waiting);
  }
}
