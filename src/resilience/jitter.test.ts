import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { retryDelay } from './jitter.js';

describe('retryDelay', () => {
  it('doubles-the-interval-per-retry-up-to-the-maximum', () => {
    // random() just below 1 gives the top of each interval.
    const top = (): number => 1 - 2 ** -53;
    const caps = [1, 2, 3, 4, 5, 6, 7].map((retry) => Math.ceil(retryDelay(retry, 25, 1_000, top)));
    assert.deepEqual(caps, [25, 50, 100, 200, 400, 800, 1_000]);
  });

  it('spreads-delays-over-the-whole-interval-from-zero', () => {
    assert.equal(retryDelay(3, 100, 10_000, () => 0), 0);
    assert.equal(retryDelay(3, 100, 10_000, () => 0.5), 200);
  });

  it('stays-finite-for-very-late-retries-and-a-zero-base', () => {
    assert.equal(retryDelay(5_000, 100, 30_000, () => 0.5), 15_000);
    assert.equal(retryDelay(5_000, 0, 30_000, () => 0.5), 0);
  });

  it('rejects-a-retry-number-below-one', () => {
    assert.throws(() => retryDelay(0, 100, 1_000), RangeError);
  });

  it('is-always-in-zero-to-the-capped-exponential (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2_000 }),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 0, max: 120_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (retry, baseMs, maxMs, r) => {
          const cap = baseMs === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** (retry - 1));
          const delay = retryDelay(retry, baseMs, maxMs, () => r);
          assert.ok(delay >= 0 && (delay < cap || (cap === 0 && delay === 0)), `${delay} for cap ${cap}`);
        },
      ),
    );
  });
});
