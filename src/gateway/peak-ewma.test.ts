import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isBerthError } from '../errors.js';
import { DEFAULT_PEAK_EWMA, PeakEwma } from './peak-ewma.js';

const config = { decayMs: 1_000, defaultRttMs: 30, failureFactor: 2 };
const noPenalty = { ...config, failureFactor: 1 };
const close = (a: number, b: number): boolean => Math.abs(a - b) < 1e-9 * Math.max(1, Math.abs(b));

describe('PeakEwma', () => {
  it('estimates an instance never observed at the default, decaying from construction', () => {
    const e = new PeakEwma(config, 100);
    assert.equal(e.estimate(100), 30);
    assert.ok(close(e.estimate(1_100), 30 * Math.exp(-1)));
  });

  it('takes a higher RTT at once (the peak)', () => {
    const e = new PeakEwma(config, 0);
    e.observe(400, false, 1);
    assert.equal(e.estimate(1), 400);
  });

  it('averages a lower RTT in with weight exp(-elapsed / decay)', () => {
    const e = new PeakEwma(config, 0);
    e.observe(100, false, 0);
    e.observe(10, false, 1_000);
    const w = Math.exp(-1);
    assert.ok(close(e.estimate(1_000), 100 * w + 10 * (1 - w)));
    // Right after an observation a lower one barely moves it: a single fast answer does not erase a slow spell.
    e.observe(1, false, 1_001);
    assert.ok(e.estimate(1_001) > 0.99 * (100 * w + 10 * (1 - w)));
  });

  it('doubles the estimate on a fast failure, and takes a slower failure at its RTT', () => {
    const e = new PeakEwma(config, 0);
    e.observe(1, true, 0);
    assert.equal(e.estimate(0), 60);
    e.observe(1, true, 0);
    assert.equal(e.estimate(0), 120);
    e.observe(900, true, 0);
    assert.equal(e.estimate(0), 900);
  });

  it('never lets a fast failure lower the estimate (factor 1, the default)', () => {
    const e = new PeakEwma(noPenalty, 0);
    e.observe(20, false, 0);
    e.observe(1, true, 100);
    assert.ok(e.estimate(100) >= 30 * Math.exp(-0.1) - 1e-9);
  });

  it('decays a penalised estimate so the instance is probed again', () => {
    const e = new PeakEwma(config, 0);
    e.observe(2, true, 0);
    assert.ok(close(e.estimate(3_000), 60 * Math.exp(-3)));
    assert.ok(e.estimate(10_000) < 0.01);
  });

  it('is not changed by reading it', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.double({ min: 0, max: 1e4, noNaN: true }), fc.boolean(), fc.integer({ min: 0, max: 5_000 })), { maxLength: 20 }), (steps) => {
        const read = new PeakEwma(config, 0);
        const unread = new PeakEwma(config, 0);
        let now = 0;
        for (const [rtt, failed, dt] of steps) {
          now += dt;
          read.estimate(now - dt / 2);
          read.estimate(now);
          read.observe(rtt, failed, now);
          unread.observe(rtt, failed, now);
        }
        assert.equal(read.estimate(now + 10), unread.estimate(now + 10));
      }),
    );
  });

  it('never grows while time passes without observations, even if the clock reads earlier', () => {
    const e = new PeakEwma(config, 1_000);
    e.observe(50, false, 1_000);
    assert.equal(e.estimate(500), 50);
    e.observe(10, false, 900); // reported late: weighs nothing, the stamp stays
    assert.equal(e.estimate(1_000), 50);
    assert.ok(e.estimate(2_000) < 50);
  });

  it('treats a negative or NaN RTT as 0', () => {
    const e = new PeakEwma(config, 0);
    e.observe(Number.NaN, false, 1_000);
    e.observe(-5, false, 2_000);
    assert.ok(Number.isFinite(e.estimate(2_000)) && e.estimate(2_000) >= 0);
  });

  it('refuses a config that would make the estimate meaningless', () => {
    for (const bad of [{ decayMs: 0 }, { decayMs: Number.POSITIVE_INFINITY }, { defaultRttMs: -1 }, { failureFactor: Number.NaN }, { failureFactor: 0.5 }]) {
      assert.throws(() => new PeakEwma({ ...DEFAULT_PEAK_EWMA, ...bad }, 0), (err) => isBerthError(err, 'BERTH_ERR_INTERNAL'));
    }
  });
});
