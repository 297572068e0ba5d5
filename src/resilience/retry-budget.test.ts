import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RetryBudget } from './retry-budget.js';

function started(budget: RetryBudget, n: number): void {
  for (let i = 0; i < n; i++) budget.requestStarted();
}

describe('RetryBudget', () => {
  it('allows-minConcurrent-retries-even-with-no-load', () => {
    const budget = new RetryBudget({ ratio: 0.2, minConcurrent: 2 });
    assert.deepEqual([budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire()], [true, true, false]);
    assert.deepEqual(budget.snapshot(), { active: 0, retriesActive: 2, allowed: 2, granted: 2, refused: 1, windowRequests: 0, windowRetries: 0 });
  });

  it('allows-ratio-times-active-requests-rounded-down-once-above-the-minimum', () => {
    const budget = new RetryBudget({ ratio: 0.2, minConcurrent: 1 });
    started(budget, 14);
    assert.equal(budget.snapshot().allowed, 2, 'floor(0.2 × 14)');
    assert.deepEqual([budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire()], [true, true, false]);
    budget.requestStarted();
    assert.equal(budget.tryAcquire(), true, '15 active requests allow a third retry');
  });

  it('gives-a-retry-back-to-the-budget-on-release', () => {
    const budget = new RetryBudget({ ratio: 0, minConcurrent: 1 });
    assert.equal(budget.tryAcquire(), true);
    assert.equal(budget.tryAcquire(), false);
    budget.release();
    assert.equal(budget.tryAcquire(), true);
    assert.deepEqual(budget.snapshot(), { active: 0, retriesActive: 1, allowed: 1, granted: 2, refused: 1, windowRequests: 0, windowRetries: 0 });
  });

  it('shrinks-as-requests-finish-and-never-counts-below-zero', () => {
    const budget = new RetryBudget({ ratio: 0.5, minConcurrent: 0 });
    started(budget, 4);
    budget.requestFinished();
    budget.requestFinished();
    assert.equal(budget.snapshot().allowed, 1);
    budget.requestFinished();
    budget.requestFinished();
    budget.requestFinished();
    budget.release();
    assert.deepEqual(budget.snapshot(), { active: 0, retriesActive: 0, allowed: 0, granted: 0, refused: 0, windowRequests: 0, windowRetries: 0 });
    assert.equal(budget.tryAcquire(), false);
  });

  it('lets-a-burst-of-retries-through-when-the-window-has-room', () => {
    // 16 in flight allow 3 at once; the last seconds' 1,000 requests allow 200.
    const budget = new RetryBudget({ ratio: 0.2, minConcurrent: 3 });
    for (let i = 0; i < 1_000; i++) budget.requestStarted(i * 5);
    for (let i = 0; i < 1_000 - 16; i++) budget.requestFinished();
    const burst = Array.from({ length: 6 }, () => budget.tryAcquire(5_000));
    assert.deepEqual(burst, [true, true, true, true, true, true]);
    assert.equal(budget.snapshot().windowRetries, 6);
  });

  it('holds-retries-to-the-ratio-of-the-window-when-everything-fails', () => {
    const budget = new RetryBudget({ ratio: 0.2, minConcurrent: 0 });
    let granted = 0;
    for (let t = 0; t < 60_000; t += 2) {
      budget.requestStarted(t);
      if (budget.tryAcquire(t)) {
        granted++;
        budget.release();
      }
      budget.requestFinished();
    }
    assert.ok(granted <= 0.2 * 30_000 + 1, `${granted} retries for 30,000 requests`);
    assert.ok(granted >= 0.19 * 30_000, `${granted} retries: the window's share is used`);
  });

  it('forgets-requests-older-than-the-window', () => {
    const budget = new RetryBudget({ ratio: 0.5, minConcurrent: 0, windowMs: 1_000 });
    for (let i = 0; i < 10; i++) budget.requestStarted(0);
    for (let i = 0; i < 10; i++) budget.requestFinished();
    assert.equal(budget.tryAcquire(500), true);
    budget.release();
    assert.equal(budget.tryAcquire(5_000), false, 'the window is empty after a long gap');
    assert.deepEqual([budget.snapshot().windowRequests, budget.snapshot().windowRetries], [0, 0]);
  });

  it('rejects-an-invalid-config-when-built', () => {
    assert.throws(() => new RetryBudget({ ratio: -0.1, minConcurrent: 1 }), RangeError);
    assert.throws(() => new RetryBudget({ ratio: Number.NaN, minConcurrent: 1 }), RangeError);
    assert.throws(() => new RetryBudget({ ratio: 0.2, minConcurrent: 1.5 }), RangeError);
  });

  it('never-has-more-retries-in-flight-than-allowed-when-one-is-granted (property)', () => {
    const op = fc.constantFrom('start', 'finish', 'acquire', 'release');
    fc.assert(
      fc.property(fc.double({ min: 0, max: 2, noNaN: true }), fc.nat(5), fc.array(op, { maxLength: 400, size: 'max' }), (ratio, minConcurrent, ops) => {
        const budget = new RetryBudget({ ratio, minConcurrent });
        let active = 0;
        let retries = 0;
        let granted = 0;
        let refused = 0;
        for (const o of ops) {
          switch (o) {
            case 'start':
              active++;
              budget.requestStarted();
              break;
            case 'finish':
              if (active === 0) break;
              active--;
              budget.requestFinished();
              break;
            case 'release':
              if (retries === 0) break;
              retries--;
              budget.release();
              break;
            case 'acquire': {
              const allowed = Math.max(minConcurrent, Math.floor(ratio * active));
              const ok = budget.tryAcquire();
              assert.equal(ok, retries < allowed);
              if (!ok) {
                refused++;
                break;
              }
              retries++;
              granted++;
              const after = budget.snapshot();
              assert.ok(after.retriesActive <= after.allowed, `${after.retriesActive} retries in flight, ${after.allowed} allowed`);
            }
          }
        }
        assert.deepEqual(budget.snapshot(), {
          active,
          retriesActive: retries,
          allowed: Math.max(minConcurrent, Math.floor(ratio * active)),
          granted,
          refused,
          windowRequests: 0,
          windowRetries: 0,
        });
      }),
    );
  });
});
