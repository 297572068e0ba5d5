import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from './backoff.js';

describe('Backoff', () => {
  it('grows by the factor and stops at the maximum', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, factor: 2, jitter: 0 });
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => b.next()), [100, 200, 400, 800, 1000, 1000]);
    assert.equal(b.attempt, 6);
  });

  it('jitters downwards within the configured fraction', () => {
    const low = new Backoff({ initialMs: 1000, maxMs: 10_000, factor: 1.5, jitter: 0.2, random: () => 1 });
    const high = new Backoff({ initialMs: 1000, maxMs: 10_000, factor: 1.5, jitter: 0.2, random: () => 0 });
    assert.equal(low.next(), 800);
    assert.equal(high.next(), 1000);
  });

  it('starts over after reset', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 15_000, factor: 1.5, jitter: 0 });
    b.next();
    b.next();
    b.reset();
    assert.equal(b.next(), 100);
  });
});
