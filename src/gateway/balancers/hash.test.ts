import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { seededRandom } from '../../testing/balancer-load.js';
import { Target } from '../target.js';
import { createBalancer, type Balancer } from './balancer.js';
import { RING_POINTS_PER_WEIGHT } from './hash.js';

const HASH = { kind: 'hash', header: 'x-user' } as const;
const target = (id: string, weight = 1): Target => new Target(id, '127.0.0.1', 1000, weight, { now: 0 });
const ring = (ts: readonly Target[]): Balancer => createBalancer(HASH, ts, { random: seededRandom(1) });
const owner = (b: Balancer, key: string): string | undefined => b.pick({ now: 0, hashKey: key })?.id;

const ids = fc.uniqueArray(fc.stringMatching(/^[a-z0-9-]{1,12}$/), { minLength: 2, maxLength: 10 });
const keys = fc.uniqueArray(fc.string({ minLength: 1 }), { minLength: 1, maxLength: 200 });

describe('hash balancer (ring)', () => {
  it('maps the same key to the same target, whatever the order the targets come in', () => {
    fc.assert(
      fc.property(ids, keys, (names, ks) => {
        const ts = names.map((n) => target(n));
        const a = ring(ts);
        const b = ring([...ts].reverse());
        for (const k of ks) {
          const first = owner(a, k);
          assert.equal(owner(a, k), first);
          assert.equal(owner(b, k), first);
        }
      }),
    );
  });

  it('moves only the keys of a target that leaves', () => {
    fc.assert(
      fc.property(ids, keys, fc.nat(), (names, ks, which) => {
        const ts = names.map((n) => target(n));
        const gone = ts[which % ts.length]!;
        const before = ring(ts);
        const after = ring(ts.filter((t) => t !== gone));
        for (const k of ks) {
          const was = owner(before, k);
          if (was !== gone.id) assert.equal(owner(after, k), was, `key ${JSON.stringify(k)} moved`);
          else assert.notEqual(owner(after, k), gone.id);
        }
      }),
    );
  });

  it('moves keys only to a target that joins', () => {
    fc.assert(
      fc.property(ids, keys, (names, ks) => {
        const ts = names.map((n) => target(n));
        const before = ring(ts.slice(1));
        const after = ring(ts);
        for (const k of ks) {
          const now = owner(after, k);
          if (now !== ts[0]!.id) assert.equal(now, owner(before, k));
        }
      }),
    );
  });

  it('spreads keys within reasonable bounds of an even share', () => {
    fc.assert(
      fc.property(ids, (names) => {
        const b = ring(names.map((n) => target(n)));
        const counts = new Map<string, number>();
        const total = 6_000;
        for (let i = 0; i < total; i++) {
          const id = owner(b, `session-${i}`)!;
          counts.set(id, (counts.get(id) ?? 0) + 1);
        }
        const even = total / names.length;
        for (const n of names) {
          const got = counts.get(n) ?? 0;
          assert.ok(got > even * 0.6 && got < even * 1.5, `${n}: ${got} of ${total} over ${names.length}`);
        }
      }),
      { numRuns: 50 },
    );
  });

  it('gives a target a share in proportion to its weight', () => {
    const b = ring([target('a', 1), target('b', 3)]);
    let heavy = 0;
    for (let i = 0; i < 8_000; i++) if (owner(b, `user:${i}`) === 'b') heavy++;
    assert.ok(heavy / 8_000 > 0.68 && heavy / 8_000 < 0.82, `${heavy}`);
  });

  it('on a retry goes where the key would go without the tried targets', () => {
    fc.assert(
      fc.property(ids, keys, (names, ks) => {
        const ts = names.map((n) => target(n));
        const full = ring(ts);
        for (const k of ks) {
          const first = ts.find((t) => t.id === owner(full, k))!;
          const without = ring(ts.filter((t) => t !== first));
          assert.equal(full.pick({ now: 0, hashKey: k, exclude: [first] })?.id, owner(without, k));
        }
      }),
    );
  });

  it('ignores slow start, so keys do not move while weights ramp', () => {
    const ts = [target('a'), target('b'), target('c')];
    ts[2]!.passingSince = 1_000;
    const b = createBalancer(HASH, ts, { slowStartMs: 10_000 });
    const settled = ring(ts);
    for (let i = 0; i < 500; i++) assert.equal(b.pick({ now: 1_500, hashKey: `k${i}` })?.id, owner(settled, `k${i}`));
  });

  it('falls back to peak EWMA when the request has no key', () => {
    const ts = [target('slow'), target('fast')];
    ts[0]!.ewma.observe(500, false, 10);
    ts[1]!.ewma.observe(2, false, 10_000);
    const b = ring(ts);
    for (let i = 0; i < 20; i++) assert.equal(b.pick({ now: 10_000 })?.id, 'fast');
    for (let i = 0; i < 20; i++) assert.equal(b.pick({ now: 10_000, hashKey: '' })?.id, 'fast');
  });

  it(`places ${RING_POINTS_PER_WEIGHT} points per unit of weight, and a fractional weight still owns keys`, () => {
    const b = ring([target('a', 0.01), target('b', 1)]);
    let small = 0;
    for (let i = 0; i < 20_000; i++) if (owner(b, `k${i}`) === 'a') small++;
    assert.ok(small > 0 && small < 600, `${small}`);
  });
});
