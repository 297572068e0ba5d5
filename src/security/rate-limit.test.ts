import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { RateRule } from '../manifest/types.js';
import { MemoryRateLimitStore, TokenBucket, rateLimitHeaders, type RateDecision } from './rate-limit.js';

const T0 = 1_700_000_000_000;

describe('TokenBucket', () => {
  it('admits-a-full-burst-at-once-then-refuses-until-a-token-has-refilled', () => {
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 5 }, T0);
    assert.deepEqual([0, 1, 2, 3, 4].map(() => bucket.take(T0)), [0, 0, 0, 0, 0]);
    assert.equal(bucket.take(T0), 100, 'one token every 100 ms at 10/s');
    assert.equal(bucket.take(T0 + 99), 1);
    assert.equal(bucket.take(T0 + 100), 0);
    assert.equal(bucket.take(T0 + 100), 100);
  });

  it('refills-continuously-counting-fractions-of-a-token', () => {
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 5 }, T0);
    for (let i = 0; i < 5; i++) bucket.take(T0);
    assert.equal(bucket.tokens(T0 + 30), 0.3);
    assert.equal(bucket.take(T0 + 30), 70, 'the 0.3 token earned counts towards the next one');
    assert.equal(bucket.remaining, 0);
    assert.equal(bucket.msUntilFull, 470);
    assert.equal(bucket.tokens(T0 + 10_000), 5, 'capped at the burst');
  });

  it('gives-exact-waits-for-rates-that-are-not-binary-fractions', () => {
    const third = new TokenBucket({ ratePerSecond: 3, burst: 1 }, T0);
    assert.equal(third.take(T0), 0);
    assert.equal(third.take(T0), 334, '333.3 ms, rounded up to a whole ms');
    assert.equal(third.take(T0 + 333), 1);
    assert.equal(third.take(T0 + 334), 0);

    const slow = new TokenBucket({ ratePerSecond: 0.3, burst: 1 }, T0);
    slow.take(T0);
    assert.equal(slow.take(T0), 3334);
    assert.equal(slow.take(T0 + 3333), 1);
    assert.equal(slow.take(T0 + 3334), 0);
  });

  it('takes-nothing-from-a-refused-request-and-refuses-a-cost-above-the-burst-forever', () => {
    const bucket = new TokenBucket({ ratePerSecond: 1, burst: 2 }, T0);
    assert.equal(bucket.take(T0, 2), 0);
    assert.equal(bucket.take(T0 + 500, 1), 500);
    assert.equal(bucket.take(T0 + 500, 1), 500, 'the refused take cost nothing');
    assert.equal(bucket.take(T0 + 500, 3), Number.POSITIVE_INFINITY);
    assert.equal(bucket.take(T0 + 500, 0), 0);
    assert.throws(() => bucket.take(T0, -1), RangeError);
  });

  it('adds-nothing-when-the-clock-steps-back', () => {
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 1 }, T0);
    bucket.take(T0);
    assert.equal(bucket.take(T0 - 5_000), 100);
    assert.equal(bucket.take(T0 + 100), 0);
  });

  it('keeps-the-tokens-earned-up-to-the-new-burst-when-the-rule-changes', () => {
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 10 }, T0);
    bucket.take(T0, 4);
    bucket.setRule({ ratePerSecond: 1, burst: 3 }, T0);
    assert.equal(bucket.tokens(T0), 3);
    bucket.setRule({ ratePerSecond: 100, burst: 50 }, T0);
    assert.equal(bucket.tokens(T0), 3, 'a larger burst is not filled by the change');
    assert.equal(bucket.tokens(T0 + 10), 4);
  });

  it('rejects-an-invalid-rule-when-built', () => {
    assert.throws(() => new TokenBucket({ ratePerSecond: 0, burst: 1 }, T0), /ratePerSecond/);
    assert.throws(() => new TokenBucket({ ratePerSecond: Number.POSITIVE_INFINITY, burst: 1 }, T0), /ratePerSecond/);
    assert.throws(() => new TokenBucket({ ratePerSecond: 1, burst: 0 }, T0), /burst/);
    assert.throws(() => new TokenBucket({ ratePerSecond: 1, burst: 1.5 }, T0), /burst/);
  });

  it('admits-a-client-that-waits-the-answer-and-on-the-exact-grid-not-a-millisecond-sooner (property)', () => {
    // Whole rates and binary fractions are exact; any other rate is only promised that waiting is enough.
    const exactRate = fc.oneof(fc.integer({ min: 1, max: 5_000 }), fc.integer({ min: 1, max: 4_000 }).map((n) => n / 64));
    const anyRate = fc.double({ min: 0.01, max: 1_000, noNaN: true });
    const rate = fc.oneof(exactRate.map((r) => ({ r, exact: true })), anyRate.map((r) => ({ r, exact: false })));
    fc.assert(
      fc.property(rate, fc.integer({ min: 1, max: 50 }), fc.array(fc.nat(2_000), { maxLength: 60 }), ({ r, exact }, burst, gaps) => {
        const bucket = new TokenBucket({ ratePerSecond: r, burst }, 0);
        let now = 0;
        for (const gap of gaps) {
          now += gap;
          const wait = bucket.take(now);
          if (wait === 0) continue;
          assert.ok(Number.isInteger(wait) && wait > 0, `wait ${wait}`);
          if (exact) assert.ok(bucket.take(now + wait - 1) > 0, `admitted at ${wait - 1} of ${wait} ms`);
          assert.equal(bucket.take(now + wait), 0, `refused after the ${wait} ms it asked for`);
          now += wait;
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('MemoryRateLimitStore', () => {
  const rule: RateRule = { ratePerSecond: 10, burst: 5 };

  it('answers-synchronously-with-exact-remaining-reset-and-retry-after', () => {
    const store = new MemoryRateLimitStore();
    const at = (now: number): RateDecision => {
      const d = store.take('client', rule, now);
      assert.ok(!(d instanceof Promise));
      return d;
    };
    assert.deepEqual(at(T0), { allowed: true, limit: 5, remaining: 4, resetMs: 100, retryAfterMs: 0 });
    at(T0);
    assert.deepEqual(at(T0), { allowed: true, limit: 5, remaining: 2, resetMs: 300, retryAfterMs: 0 });
    at(T0);
    assert.deepEqual(at(T0), { allowed: true, limit: 5, remaining: 0, resetMs: 500, retryAfterMs: 0 });
    assert.deepEqual(at(T0), { allowed: false, limit: 5, remaining: 0, resetMs: 500, retryAfterMs: 100 });
    assert.deepEqual(at(T0 + 30), { allowed: false, limit: 5, remaining: 0, resetMs: 470, retryAfterMs: 70 });
    assert.deepEqual(at(T0 + 250), { allowed: true, limit: 5, remaining: 1, resetMs: 350, retryAfterMs: 0 });
    store.close();
  });

  it('keeps-an-independent-bucket-per-key', () => {
    const store = new MemoryRateLimitStore();
    const tally = (key: string, n: number): number => {
      let admitted = 0;
      for (let i = 0; i < n; i++) if ((store.take(key, rule, T0)).allowed) admitted++;
      return admitted;
    };
    assert.equal(tally('10.0.0.1', 8), 5);
    assert.equal(tally('10.0.0.2', 8), 5, 'the first client used up its own burst only');
    assert.equal(tally('10.0.0.1', 1), 0);
    assert.equal(store.size, 2);
    store.close();
    assert.equal(store.size, 0);
  });

  it('admits-the-rules-rate-in-the-long-run-under-twice-that-load', () => {
    const store = new MemoryRateLimitStore();
    const steady: RateRule = { ratePerSecond: 100, burst: 20 };
    let admitted = 0;
    // 200 requests a second for 60 s: one every 5 ms.
    for (let t = 0; t < 60_000; t += 5) if ((store.take('k', steady, T0 + t)).allowed) admitted++;
    const expected = 100 * 60 + 20;
    assert.ok(Math.abs(admitted - expected) <= expected * 0.01, `${admitted} admitted, ${expected} expected`);
    store.close();
  });

  it('never-admits-more-than-burst-plus-rate-times-T-in-any-window-of-length-T (property)', () => {
    // Rates that are binary fractions keep the bound exact: no tolerance needed.
    const rate = fc.oneof(fc.integer({ min: 1, max: 200 }), fc.constantFrom(0.5, 0.25, 1.5, 2.5));
    fc.assert(
      fc.property(rate, fc.integer({ min: 1, max: 20 }), fc.array(fc.nat(400), { minLength: 1, maxLength: 200 }), (ratePerSecond, burst, gaps) => {
        const store = new MemoryRateLimitStore();
        const r: RateRule = { ratePerSecond, burst };
        const admittedAt: number[] = [];
        let now = 0;
        for (const gap of gaps) {
          now += gap;
          if ((store.take('k', r, now)).allowed) admittedAt.push(now);
        }
        for (let i = 0; i < admittedAt.length; i++) {
          for (let j = i; j < admittedAt.length; j++) {
            const length = admittedAt[j]! - admittedAt[i]!;
            const count = j - i + 1;
            assert.ok(count <= burst + (ratePerSecond * length) / 1000, `${count} admitted within ${length} ms at ${ratePerSecond}/s, burst ${burst}`);
          }
        }
      }),
    );
  });

  it('holds-at-most-maxKeys-buckets-dropping-the-least-recently-used', () => {
    const store = new MemoryRateLimitStore({ maxKeys: 100 });
    // All at one instant, so that no bucket refills and the sweep drops none.
    for (let i = 0; i < 1_000; i++) {
      store.take(`ip-${i}`, rule, T0);
      store.take('regular', rule, T0);
      assert.ok(store.size <= 100, `${store.size} buckets`);
    }
    assert.equal(store.size, 100);
    assert.equal(store.evictions, 1_000 - 99);
    // 'regular' was used all along, so it was kept: still empty, not a fresh bucket.
    assert.equal((store.take('regular', rule, T0)).allowed, false);
    assert.equal((store.take('ip-950', rule, T0)).remaining, 3, 'a recent key was kept');
    assert.equal((store.take('ip-0', rule, T0)).remaining, 4, 'ip-0 was dropped: a full bucket again');
    store.close();
  });

  it('makes-room-with-a-full-bucket-before-dropping-one-in-use', () => {
    const store = new MemoryRateLimitStore({ maxKeys: 2 });
    store.take('a', rule, T0);
    store.take('b', { ratePerSecond: 1, burst: 5 }, T0);
    // At T0 + 100, 'a' (10/s) is full again and 'b' (1/s) is not.
    store.take('c', rule, T0 + 100);
    assert.equal(store.size, 2);
    assert.equal(store.evictions, 0, 'forgetting a full bucket loses nothing');
    assert.equal(store.take('b', { ratePerSecond: 1, burst: 5 }, T0 + 100).remaining, 3, "'b' was kept");
    store.close();
  });

  it('forgets-buckets-once-they-are-full-again-without-a-timer', () => {
    const store = new MemoryRateLimitStore();
    for (let i = 0; i < 1_000; i++) store.take(`ip-${i}`, rule, T0);
    assert.equal(store.size, 1_000);
    // Half a second later every bucket is full again (5 tokens at 10/s); one client keeps coming.
    for (let i = 0; i < 2_000; i++) store.take('steady', rule, T0 + 500 + i);
    assert.equal(store.size, 1, 'only the bucket in use is left');
    assert.equal(store.evictions, 0);
    store.close();
  });

  it('does-not-forget-a-bucket-that-is-still-refilling', () => {
    const store = new MemoryRateLimitStore();
    const slow: RateRule = { ratePerSecond: 1, burst: 5 };
    for (let i = 0; i < 5; i++) store.take('heavy', slow, T0);
    for (let i = 0; i < 200; i++) store.take(`other-${i % 10}`, rule, T0 + 1_000 + i);
    const d = store.take('heavy', slow, T0 + 1_500);
    assert.deepEqual(d, { allowed: true, limit: 5, remaining: 0, resetMs: 4_500, retryAfterMs: 0 });
    store.close();
  });

  it('follows-a-new-rule-for-an-existing-key-after-a-reload', () => {
    const store = new MemoryRateLimitStore();
    for (let i = 0; i < 5; i++) store.take('k', rule, T0);
    const tighter: RateRule = { ratePerSecond: 1, burst: 2 };
    // 50 ms at the old 10/s earned half a token; the new rule refills the rest at 1/s.
    assert.deepEqual(store.take('k', tighter, T0 + 50), { allowed: false, limit: 2, remaining: 0, resetMs: 1_500, retryAfterMs: 500 });
    store.close();
  });
});

describe('rateLimitHeaders', () => {
  const rule: RateRule = { ratePerSecond: 10, burst: 20 };

  it('gives-limit-remaining-reset-and-policy-when-admitted', () => {
    const d: RateDecision = { allowed: true, limit: 20, remaining: 12, resetMs: 801, retryAfterMs: 0 };
    assert.deepEqual(rateLimitHeaders(d, rule), {
      'RateLimit-Limit': '20',
      'RateLimit-Remaining': '12',
      'RateLimit-Reset': '1',
      'RateLimit-Policy': '20;w=2',
    });
  });

  it('adds-retry-after-in-whole-seconds-at-least-one-when-refused', () => {
    const d: RateDecision = { allowed: false, limit: 20, remaining: 0, resetMs: 1_990, retryAfterMs: 90 };
    assert.deepEqual(rateLimitHeaders(d, rule), {
      'RateLimit-Limit': '20',
      'RateLimit-Remaining': '0',
      'RateLimit-Reset': '1',
      'RateLimit-Policy': '20;w=2',
      'Retry-After': '1',
    });
    assert.equal(rateLimitHeaders({ ...d, retryAfterMs: 2_001 }, rule)['Retry-After'], '3');
  });

  it('rounds-the-policy-window-up-so-a-client-keeping-to-it-is-never-refused', () => {
    assert.equal(rateLimitHeaders({ allowed: true, limit: 10, remaining: 9, resetMs: 334, retryAfterMs: 0 }, { ratePerSecond: 3, burst: 10 })['RateLimit-Policy'], '10;w=4');
    assert.equal(rateLimitHeaders({ allowed: true, limit: 5, remaining: 4, resetMs: 10, retryAfterMs: 0 }, { ratePerSecond: 100, burst: 5 })['RateLimit-Policy'], '5;w=1');
  });
});
