import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { runLoad, seededRandom, shares } from '../../testing/balancer-load.js';
import { Target } from '../target.js';
import { createBalancer, type BalancerSpec } from './balancer.js';
import { slowStartFactor } from './slow-start.js';

const NOW = 1_000_000;
const targets = (...weights: number[]): Target[] => weights.map((w, i) => new Target(`t${i}`, '127.0.0.1', 1000 + i, w, { now: 0 }));
const at = { now: NOW };

function counts(picks: (Target | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of picks) if (t) out[t.id] = (out[t.id] ?? 0) + 1;
  return out;
}

const SPECS: BalancerSpec[] = [{ kind: 'peak-ewma' }, { kind: 'round-robin' }, { kind: 'least-request' }, { kind: 'hash', header: 'x-user' }];

// The contract every balancer keeps, whatever its rule.
for (const spec of SPECS) {
  describe(`balancer contract: ${spec.kind}`, () => {
    it('has nothing to pick when no target has a weight above 0', () => {
      assert.equal(createBalancer(spec, []).pick(at), undefined);
      assert.equal(createBalancer(spec, targets(0, 0)).pick({ now: NOW, hashKey: 'k' }), undefined);
    });

    it('never picks a target of weight 0', () => {
      const b = createBalancer(spec, targets(0, 1, 0), { random: seededRandom(1) });
      for (let i = 0; i < 50; i++) assert.equal(b.pick({ now: NOW, hashKey: `k${i}` })?.id, 't1');
    });

    it('never returns an excluded target while another exists', () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 2, maxLength: 6 }),
          fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
          fc.option(fc.string(), { nil: undefined }),
          fc.integer(),
          (weights, excluded, hashKey, seed) => {
            const ts = targets(...weights);
            const exclude = ts.filter((_, i) => excluded[i]);
            if (exclude.length === ts.length) exclude.pop();
            const b = createBalancer(spec, ts, { random: seededRandom(seed), slowStartMs: 1_000 });
            for (let i = 0; i < 20; i++) {
              const picked = b.pick({ now: NOW + i, exclude, ...(hashKey === undefined ? {} : { hashKey }) });
              assert.ok(picked && ts.includes(picked), 'picks a target');
              assert.ok(!exclude.includes(picked), `picked excluded ${picked.id}`);
            }
          },
        ),
      );
    });

    it('goes back to a tried target when every target was tried', () => {
      const ts = targets(1, 1, 1);
      const b = createBalancer(spec, ts, { random: seededRandom(2) });
      const picked = b.pick({ now: NOW, exclude: ts, hashKey: 'k' });
      assert.ok(picked && ts.includes(picked));
    });
  });
}

describe('round-robin', () => {
  it('cycles through equal targets in order', () => {
    const b = createBalancer({ kind: 'round-robin' }, targets(1, 1, 1));
    assert.deepEqual(Array.from({ length: 6 }, () => b.pick(at)?.id), ['t0', 't1', 't2', 't0', 't1', 't2']);
  });

  it('gives each target its weighted share, interleaved (smooth WRR)', () => {
    const b = createBalancer({ kind: 'round-robin' }, targets(5, 1, 1));
    const seq = Array.from({ length: 7 }, () => b.pick(at)?.id);
    // nginx's smooth sequence for 5,1,1: a a b a c a a
    assert.deepEqual(seq, ['t0', 't0', 't1', 't0', 't2', 't0', 't0']);
  });

  it('over any whole cycle, picks are exactly proportional to weights', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 10 }), { minLength: 1, maxLength: 6 }), (weights) => {
        const ts = targets(...weights);
        const b = createBalancer({ kind: 'round-robin' }, ts);
        const total = weights.reduce((a, w) => a + w, 0);
        const got = counts(Array.from({ length: total * 3 }, () => b.pick(at)));
        ts.forEach((t, i) => assert.equal(got[t.id] ?? 0, weights[i]! * 3));
      }),
    );
  });

  it('skips a tried target and keeps the others in their order', () => {
    const ts = targets(1, 1, 1);
    const b = createBalancer({ kind: 'round-robin' }, ts);
    assert.deepEqual(Array.from({ length: 4 }, () => b.pick({ now: NOW, exclude: [ts[1]!] })?.id), ['t0', 't2', 't0', 't2']);
  });

  it('keeps weighted shares among the targets not excluded', () => {
    const ts = targets(3, 1, 5);
    const b = createBalancer({ kind: 'round-robin' }, ts);
    const got = counts(Array.from({ length: 40 }, () => b.pick({ now: NOW, exclude: [ts[2]!] })));
    assert.deepEqual(got, { t0: 30, t1: 10 });
  });
});

describe('least-request (power of two choices)', () => {
  it('prefers the target with fewer requests in flight', () => {
    const ts = targets(1, 1);
    ts[0]!.inflight = 5;
    const b = createBalancer({ kind: 'least-request' }, ts, { random: () => 0.1 });
    for (let i = 0; i < 10; i++) assert.equal(b.pick(at)?.id, 't1');
  });

  it('never picks the busiest of several targets when the two drawn differ', () => {
    const ts = targets(1, 1, 1);
    ts[2]!.inflight = 100;
    const b = createBalancer({ kind: 'least-request' }, ts, { random: seededRandom(3) });
    const picks = counts(Array.from({ length: 300 }, () => b.pick(at)));
    assert.equal(picks.t2, undefined);
  });

  it('weighs in-flight counts by weight', () => {
    const ts = targets(4, 1);
    ts[0]!.inflight = 3;
    ts[1]!.inflight = 1;
    // (3+1)/4 < (1+1)/1: the heavier target still wins.
    const b = createBalancer({ kind: 'least-request' }, ts, { random: () => 0 });
    assert.equal(b.pick(at)?.id, 't0');
  });

  it('prefers the heavier of two idle targets', () => {
    const ts = targets(1, 3);
    const b = createBalancer({ kind: 'least-request' }, ts, { random: () => 0 });
    assert.equal(b.pick(at)?.id, 't1');
  });

  it('spreads evenly when idle', () => {
    const b = createBalancer({ kind: 'least-request' }, targets(1, 1, 1), { random: seededRandom(4) });
    const got = counts(Array.from({ length: 3000 }, () => b.pick(at)));
    for (const id of ['t0', 't1', 't2']) assert.ok((got[id] ?? 0) > 800, JSON.stringify(got));
  });
});

describe('slow start', () => {
  it('ramps the factor linearly from a tenth to 1 over the window', () => {
    const [t] = targets(1);
    t!.passingSince = 10_000;
    assert.equal(slowStartFactor(t!, 10_000, 0), 1);
    assert.equal(slowStartFactor(t!, 10_000, 5_000), 0.1);
    assert.equal(slowStartFactor(t!, 9_000, 5_000), 0.1);
    assert.equal(slowStartFactor(t!, 12_500, 5_000), 0.5);
    assert.equal(slowStartFactor(t!, 15_000, 5_000), 1);
    assert.equal(slowStartFactor(t!, 99_000, 5_000), 1);
  });

  // Two old instances and one that just entered rotation at 0, a 10 s window: its share of each second.
  function rampOf(spec: BalancerSpec): number[] {
    const ts = targets(1, 1, 1);
    ts[0]!.passingSince = ts[1]!.passingSince = -60_000;
    ts[2]!.passingSince = 0;
    const b = createBalancer(spec, ts, { random: seededRandom(5), slowStartMs: 10_000 });
    const picks = runLoad({ balancer: b, start: 0, intervalMs: 1, requests: 12_000, serve: () => ({ rttMs: 10 }) });
    return [0, 4, 9, 11].map((s) => shares(picks, s * 1000, (s + 1) * 1000).t2 ?? 0);
  }

  for (const kind of ['round-robin', 'least-request', 'peak-ewma'] as const) {
    it(`ramps a new instance's share up over the window (${kind})`, () => {
      const [first, early, late, after] = rampOf({ kind }) as [number, number, number, number];
      assert.ok(first < 0.15, `first second ${first}`);
      assert.ok(first < early && early < late && late <= after + 0.02, `${first} ${early} ${late} ${after}`);
      assert.ok(after > 0.28 && after < 0.39, `after the window ${after}`);
    });
  }

  it('gives round robin exactly the weighted share of the factor', () => {
    const [first, early, late, after] = rampOf({ kind: 'round-robin' }) as [number, number, number, number];
    // factor 0.1..0.15 in the first second (≈ 5–7 %), 0.45 around 4.5 s (≈ 18 %), 0.95 (≈ 32 %), 1 (⅓).
    assert.ok(first > 0.04 && first < 0.075, `${first}`);
    assert.ok(Math.abs(early - 0.45 / 2.45) < 0.01, `${early}`);
    assert.ok(Math.abs(after - 1 / 3) < 0.01, `${after}`);
    assert.ok(late > 0.3, `${late}`);
  });

  it('leaves every instance its full share once all are past the window', () => {
    const ts = targets(2, 1);
    const b = createBalancer({ kind: 'round-robin' }, ts, { slowStartMs: 1_000 });
    assert.deepEqual(counts(Array.from({ length: 30 }, () => b.pick({ now: 5_000 }))), { t0: 20, t1: 10 });
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

  it('starts its slow start and latency estimate at construction', () => {
    const t = new Target('a', '127.0.0.1', 80, 1, { now: 5_000 });
    assert.equal(t.passingSince, 5_000);
    assert.equal(t.ewma.estimate(5_000), 30);
    const custom = new Target('b', '127.0.0.1', 81, 1, { now: 0, defaultRttMs: 7 });
    assert.equal(custom.ewma.estimate(0), 7);
  });

  it('reads the gateway clock when no reading is given', () => {
    const before = performance.now();
    const t = new Target('a', '127.0.0.1', 80, 1);
    assert.ok(t.passingSince >= before && t.passingSince <= performance.now());
  });
});
