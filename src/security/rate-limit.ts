/**
 * Rate limits: a token bucket per client key. The bucket is a plain state
 * machine that is given the time; the store maps keys to buckets and keeps
 * their number bounded; `rateLimitHeaders` says the outcome to the client.
 * Nothing here knows of HTTP requests or reads a clock.
 */
import type { RateRule } from '../manifest/types.js';

/** Tokens are counted in thousandths, so that refilling is `elapsed ms × ratePerSecond`. */
const MILLI = 1000;
/**
 * Thousandths of a token a take may be short by. With a rate that is no
 * binary fraction (100/min is 1.666…/s) the refills of several takes add up
 * rounding errors, and a client that waited exactly the time it was told
 * could find the bucket 1e-13 short; this forgives it. On the exact grid
 * (whole rates, whole ms) levels differ by at least 1, so it changes nothing.
 */
const SLACK = 1e-6;

/**
 * A token bucket: `burst` tokens at most, `ratePerSecond` added continuously
 * (fractions of a token included), one taken per request. It starts full.
 *
 * Tokens are kept in thousandths: with a whole-number rate (or a binary
 * fraction such as 0.5) and a clock in whole milliseconds, every step is
 * arithmetic on integers, which a double holds exactly, and the wait `take`
 * answers is exact: the bucket has the tokens after that many ms, and not one
 * ms sooner. In tokens, 30 ms at 10/s would be 0.3, which a double does not
 * hold, and a client that waited exactly the advertised time could be
 * refused again for want of 1e-16 of a token.
 */
export class TokenBucket {
  #rule: RateRule;
  #rate: number;
  #capacity: number;
  // Thousandths of a token in the bucket at #last.
  #level: number;
  #last: number;

  constructor(rule: RateRule, now: number) {
    validateRule(rule);
    this.#rule = rule;
    this.#rate = rule.ratePerSecond;
    this.#capacity = rule.burst * MILLI;
    this.#level = this.#capacity;
    this.#last = now;
  }

  /** The rule the bucket follows. */
  get rule(): RateRule {
    return this.#rule;
  }

  /**
   * Takes `cost` tokens at `now` (ms): 0 when they were there, otherwise
   * nothing is taken and the answer is the whole milliseconds to wait until
   * they will be (Infinity when `cost` exceeds the burst).
   */
  take(now: number, cost = 1): number {
    if (!(cost >= 0)) throw new RangeError(`TokenBucket: cost must be a non-negative number, got ${cost}`);
    this.#refill(now);
    const need = cost * MILLI;
    const left = this.#level - need;
    if (left >= -SLACK) {
      this.#level = left > 0 ? left : 0;
      return 0;
    }
    if (need > this.#capacity) return Number.POSITIVE_INFINITY;
    return this.#msUntil(need);
  }

  /** Tokens in the bucket at `now`, fractions included. */
  tokens(now: number): number {
    this.#refill(now);
    return this.#level / MILLI;
  }

  /** Whole tokens left at the last take (or `tokens()`): what a client may still send at once. */
  get remaining(): number {
    return Math.floor(this.#level / MILLI);
  }

  /** Whole milliseconds from the last take until the bucket is full again. */
  get msUntilFull(): number {
    return this.#msUntil(this.#capacity);
  }

  /** Whether the bucket is full at `now`: then it is the same as a new one, and may be forgotten. */
  isFull(now: number): boolean {
    return now >= this.#last && this.#level + (now - this.#last) * this.#rate >= this.#capacity;
  }

  /**
   * Follows a new rule from `now` on (a reload): tokens earned so far are
   * kept, up to the new burst; a larger burst is not filled by the change.
   */
  setRule(rule: RateRule, now: number): void {
    validateRule(rule);
    this.#refill(now);
    this.#rule = rule;
    this.#rate = rule.ratePerSecond;
    this.#capacity = rule.burst * MILLI;
    if (this.#level > this.#capacity) this.#level = this.#capacity;
  }

  #refill(now: number): void {
    // A clock read before the last one (callers read it before queuing) adds nothing, and does not move #last back.
    if (now <= this.#last) return;
    const level = this.#level + (now - this.#last) * this.#rate;
    this.#level = level < this.#capacity ? level : this.#capacity;
    this.#last = now;
  }

  // Whole ms until the level reaches `need` (thousandths), rounded up so that
  // a caller who waits that long finds it there; the check catches a quotient
  // that rounding put on a whole number just below the true one.
  #msUntil(need: number): number {
    const missing = need - this.#level;
    if (missing <= 0) return 0;
    let ms = Math.ceil(missing / this.#rate);
    if (ms * this.#rate < missing) ms++;
    return ms;
  }
}

/** The outcome of one request against one rule. */
export interface RateDecision {
  allowed: boolean;
  /** The rule's burst: requests a client may send at once from a full bucket. */
  limit: number;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Whole ms until the bucket is full again. */
  resetMs: number;
  /** Whole ms until a refused request would be admitted; 0 when allowed. */
  retryAfterMs: number;
}

/**
 * Where the buckets live. The gateway talks to this interface, not to the
 * map, so that a store shared by the nodes of a cluster (Redis, with the
 * bucket as a script) can take its place later without a change to the
 * policy. A store may answer synchronously, and the embedded one does: a
 * promise per request would cost more than the bucket itself (bench/policies),
 * so callers must accept both and only await what is a promise.
 */
export interface RateLimitStore {
  /**
   * Takes one token from the bucket `key` under `rule` at `now` (ms). A key
   * names one bucket: callers put the rule's scope in it (route and client),
   * so that two rules never share one.
   */
  take(key: string, rule: RateRule, now: number): RateDecision | Promise<RateDecision>;
  /** Lets go of the buckets (and any connection or timer); the store is not used afterwards. */
  close(): void;
}

export interface MemoryRateLimitStoreOptions {
  /** Buckets kept at most (default 100,000); past it one not used lately is dropped. */
  maxKeys?: number;
}

/** A bucket that knows its key (the sweep deletes it while walking the values), and whether it was used lately. */
class KeyedBucket extends TokenBucket {
  /** Set by every take, cleared when eviction passes over it: its second chance. */
  used = true;

  constructor(
    readonly key: string,
    rule: RateRule,
    now: number,
  ) {
    super(rule, now);
  }
}

/** Takes between two steps of the sweep, and buckets looked at by each: on average one per take. */
const SWEEP_EVERY = 32;
/** Buckets an eviction passes over (giving them a second chance) before it drops one anyway. */
const EVICTION_SCAN = 64;

/**
 * The buckets of one node, in a Map. Memory is bounded twice over:
 *
 * - A full bucket is the same as no bucket (a new one starts full), so the
 *   store forgets buckets once they are full again. No timer: every
 *   SWEEP_EVERY takes, the sweep looks at the next SWEEP_EVERY buckets (a
 *   cursor that goes round the Map) and deletes the full ones. Buckets are
 *   created at most one per take, so the sweep keeps up with them.
 * - At most `maxKeys` buckets: a new key past that drops a bucket not used
 *   lately, found by the CLOCK algorithm (an approximation of least recently
 *   used): from the oldest entry on, a bucket used since eviction last passed
 *   over it is moved to the end with its flag cleared, and the first one not
 *   used is dropped. Strict LRU would move a bucket to the end of the Map on
 *   every take, and that delete + set measured ~350 ns a take, the Map
 *   rehashing itself to reclaim the deleted slots; a flag costs nothing.
 *   A client whose bucket is dropped before it is full gets a full one next
 *   time: `maxKeys` must exceed the clients active within a bucket's refill
 *   time, and `evictions` says when it does not.
 *
 * Synchronous: `take` returns a decision, never a promise.
 */
export class MemoryRateLimitStore implements RateLimitStore {
  readonly #maxKeys: number;
  #buckets = new Map<string, KeyedBucket>();
  #cursor: MapIterator<KeyedBucket> | undefined;
  #untilSweep = SWEEP_EVERY;
  #evictions = 0;

  constructor(options: MemoryRateLimitStoreOptions = {}) {
    const maxKeys = options.maxKeys ?? 100_000;
    if (!(Number.isSafeInteger(maxKeys) && maxKeys >= 1)) throw new RangeError(`MemoryRateLimitStore: maxKeys must be a positive integer, got ${maxKeys}`);
    this.#maxKeys = maxKeys;
  }

  /**
   * Pass the same rule object for a key each time (the compiled route's):
   * another object is taken as a reload, and the bucket follows it.
   */
  take(key: string, rule: RateRule, now: number): RateDecision {
    // Keys are built per request (scope + address): a V8 cons string, which
    // Map.get flattens and hashes in a runtime call, ~170 ns. Reading one
    // character flattens it on the fast path first: ~85 ns less a take.
    key.charCodeAt(0);
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxKeys) this.#evict(now);
      bucket = new KeyedBucket(key, rule, now);
      this.#buckets.set(key, bucket);
    } else {
      bucket.used = true;
      if (bucket.rule !== rule) bucket.setRule(rule, now);
    }
    const wait = bucket.take(now);
    if (--this.#untilSweep === 0) this.#sweep(now);
    return { allowed: wait === 0, limit: rule.burst, remaining: bucket.remaining, resetMs: bucket.msUntilFull, retryAfterMs: wait };
  }

  /** Buckets held now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Buckets dropped before they were full because `maxKeys` was reached. */
  get evictions(): number {
    return this.#evictions;
  }

  close(): void {
    this.#buckets.clear();
    this.#cursor = undefined;
  }

  // Makes room for one bucket: a full one if met on the way (no loss), else the first one not used lately.
  #evict(now: number): void {
    const buckets = this.#buckets;
    let scanned = 0;
    for (const bucket of buckets.values()) {
      if (bucket.isFull(now)) {
        buckets.delete(bucket.key);
        return;
      }
      if (!bucket.used || ++scanned > EVICTION_SCAN) {
        buckets.delete(bucket.key);
        this.#evictions++;
        return;
      }
      // Its second chance: to the end, flag cleared. The iterator meets it again only after all the others.
      bucket.used = false;
      buckets.delete(bucket.key);
      buckets.set(bucket.key, bucket);
    }
  }

  #sweep(now: number): void {
    this.#untilSweep = SWEEP_EVERY;
    // A Map iterator is live: it skips deleted entries and reaches the ones
    // set after it was made, so one cursor walks the whole Map across sweeps.
    let cursor = this.#cursor ?? this.#buckets.values();
    for (let i = 0; i < SWEEP_EVERY; i++) {
      const next = cursor.next();
      if (next.done === true) {
        // One round done; the next starts at the oldest bucket.
        cursor = this.#buckets.values();
        if (i > 0) break;
        continue;
      }
      const bucket = next.value;
      if (bucket.isFull(now)) this.#buckets.delete(bucket.key);
    }
    this.#cursor = cursor;
  }
}

/**
 * The headers that tell a client about its limit, in the form of
 * draft-ietf-httpapi-ratelimit-headers up to -06 (what clients and
 * libraries read today, e.g. express-rate-limit's `draft-6`):
 *
 * - `RateLimit-Limit`: the burst;
 * - `RateLimit-Remaining`: whole requests that may be sent at once now;
 * - `RateLimit-Reset`: seconds (rounded up) until the bucket is full again;
 *   on a refusal, until `Retry-After`, since the draft asks both to name the
 *   same moment;
 * - `RateLimit-Policy: <burst>;w=<seconds>`: `burst` requests per window,
 *   the window being the time to refill the whole burst, rounded up to whole
 *   seconds (the draft's unit): a client that keeps to it is never refused;
 * - on a refusal, `Retry-After` in whole seconds, rounded up, at least 1.
 *
 * Drafts -07 and later replace the first three with one structured field,
 * `RateLimit: "<policy>";r=<remaining>;t=<reset>`, and name the policy
 * (`RateLimit-Policy: "<policy>";q=<burst>;w=<seconds>`); they are not
 * final, and a client that reads them also reads these.
 */
export function rateLimitHeaders(d: RateDecision, rule: RateRule): Record<string, string> {
  const windowSeconds = Math.max(1, Math.ceil(rule.burst / rule.ratePerSecond));
  const headers: Record<string, string> = {
    'RateLimit-Limit': String(rule.burst),
    'RateLimit-Remaining': String(d.remaining),
    'RateLimit-Reset': String(Math.ceil(d.resetMs / 1000)),
    'RateLimit-Policy': `${rule.burst};w=${windowSeconds}`,
  };
  if (!d.allowed) {
    const retryAfter = String(Math.max(1, Math.ceil(d.retryAfterMs / 1000)));
    headers['RateLimit-Reset'] = retryAfter;
    headers['Retry-After'] = retryAfter;
  }
  return headers;
}

function validateRule(rule: RateRule): void {
  const { ratePerSecond, burst } = rule;
  if (!(ratePerSecond > 0 && Number.isFinite(ratePerSecond))) throw new RangeError(`rate limit: ratePerSecond must be a positive number, got ${ratePerSecond}`);
  if (!(Number.isSafeInteger(burst) && burst >= 1)) throw new RangeError(`rate limit: burst must be a positive integer, got ${burst}`);
}
