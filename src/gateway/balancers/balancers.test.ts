import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Target } from '../target.js';
import { createBalancer } from './balancer.js';

const targets = (...weights: number[]): Target[] => weights.map((w, i) => new Target(`t${i}`, '127.0.0.1', 1000 + i, w));

function counts(picks: (Target | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of picks) if (t) out[t.id] = (out[t.id] ?? 0) + 1;
  return out;
}

describe('round-robin', () => {
  it('cycles through equal targets in order', () => {
    const b = createBalancer('round-robin', targets(1, 1, 1));
    assert.deepEqual(Array.from({ length: 6 }, () => b.pick()?.id), ['t0', 't1', 't2', 't0', 't1', 't2']);
  });

  it('gives each target its weighted share, interleaved (smooth WRR)', () => {
    const b = createBalancer('round-robin', targets(5, 1, 1));
    const seq = Array.from({ length: 7 }, () => b.pick()?.id);
    assert.deepEqual(counts(seq.map((id) => targets(5, 1, 1).find((t) => t.id === id))), { t0: 5, t1: 1, t2: 1 });
    // nginx's smooth sequence for 5,1,1: a a b a c a a
    assert.deepEqual(seq, ['t0', 't0', 't1', 't0', 't2', 't0', 't0']);
  });

  it('over any whole cycle, picks are exactly proportional to weights', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 10 }), { minLength: 1, maxLength: 6 }), (weights) => {
        const ts = targets(...weights);
        const b = createBalancer('round-robin', ts);
        const total = weights.reduce((a, w) => a + w, 0);
        const got = counts(Array.from({ length: total * 3 }, () => b.pick()));
        ts.forEach((t, i) => assert.equal(got[t.id] ?? 0, weights[i]! * 3));
      }),
    );
  });

  it('has nothing to pick when every weight is 0', () => {
    assert.equal(createBalancer('round-robin', targets(0, 0)).pick(), undefined);
    assert.equal(createBalancer('round-robin', []).pick(), undefined);
  });
});

describe('least-request (power of two choices)', () => {
  it('prefers the target with fewer requests in flight', () => {
    const ts = targets(1, 1);
    ts[0]!.inflight = 5;
    const b = createBalancer('least-request', ts, () => 0.1);
    for (let i = 0; i < 10; i++) assert.equal(b.pick()?.id, 't1');
  });

  it('never picks the busiest of several targets when the two drawn differ', () => {
    const ts = targets(1, 1, 1);
    ts[2]!.inflight = 100;
    const b = createBalancer('least-request', ts);
    const picks = counts(Array.from({ length: 300 }, () => b.pick()));
    assert.equal(picks.t2, undefined);
  });

  it('weighs in-flight counts by weight', () => {
    const ts = targets(4, 1);
    ts[0]!.inflight = 3;
    ts[1]!.inflight = 1;
    // 3/4 < 1/1: the heavier target still wins.
    const b = createBalancer('least-request', ts, () => 0);
    assert.equal(b.pick()?.id, 't0');
  });

  it('spreads evenly when idle', () => {
    const b = createBalancer('least-request', targets(1, 1, 1));
    const got = counts(Array.from({ length: 3000 }, () => b.pick()));
    for (const id of ['t0', 't1', 't2']) assert.ok((got[id] ?? 0) > 800, JSON.stringify(got));
  });
});

describe('Target', () => {
  it('resolves idle() once the last in-flight request is released', async () => {
    const t = new Target('a', '::1', 80, 1);
    assert.equal(t.origin, 'http://[::1]:80');
    t.acquire();
    t.acquire();
    let idle = false;
    const waiting = t.idle().then(() => (idle = true));
    t.release();
    await Promise.resolve();
    assert.equal(idle, false);
    t.release();
    await waiting;
    assert.equal(idle, true);
  });
});
