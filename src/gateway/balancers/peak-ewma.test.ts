import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runLoad, seededRandom, shares } from '../../testing/balancer-load.js';
import { Target } from '../target.js';
import { createBalancer } from './balancer.js';

const targets = (n: number, options: { decayMs?: number } = {}): Target[] =>
  Array.from({ length: n }, (_, i) => new Target(`t${i}`, '127.0.0.1', 1000 + i, 1, { now: 0, ...options }));

describe('peak-ewma balancer', () => {
  it('sends a slow instance under 5 % of requests', () => {
    const ts = targets(3);
    const b = createBalancer({ kind: 'peak-ewma' }, ts, { random: seededRandom(7) });
    const picks = runLoad({ balancer: b, start: 0, intervalMs: 1, requests: 1000, serve: (t) => ({ rttMs: t.id === 't0' ? 500 : 2 }) });
    const got = shares(picks);
    assert.ok((got.t0 ?? 0) < 0.05, JSON.stringify(got));
    // Round robin, for contrast, gives it a third whatever its latency.
    const rr = runLoad({ balancer: createBalancer({ kind: 'round-robin' }, targets(3)), start: 0, intervalMs: 1, requests: 999, serve: () => ({ rttMs: 2 }) });
    assert.ok(Math.abs((shares(rr).t0 ?? 0) - 1 / 3) < 0.01);
  });

  it('prefers the instance with the lower estimate when both are idle', () => {
    const ts = targets(2);
    ts[0]!.ewma.observe(500, false, 10);
    ts[1]!.ewma.observe(2, false, 10_000);
    const b = createBalancer({ kind: 'peak-ewma' }, ts, { random: seededRandom(8) });
    for (let i = 0; i < 20; i++) assert.equal(b.pick({ now: 10_000 })?.id, 't1');
  });

  it('lets in-flight requests outweigh a better estimate', () => {
    const ts = targets(2);
    ts[0]!.ewma.observe(50, false, 10);
    ts[1]!.ewma.observe(10, false, 10_000);
    ts[1]!.inflight = 9; // 10 × 10 > 50 × 1
    const b = createBalancer({ kind: 'peak-ewma' }, ts, { random: seededRandom(9) });
    assert.equal(b.pick({ now: 10_000 })?.id, 't0');
  });

  it('does not draw traffic to an instance that fails fast, and shares again after it recovers', () => {
    // A 1 s decay keeps the simulation short; the default is 10 s, the same shape ten times slower.
    const ts = targets(3, { decayMs: 1_000 });
    const b = createBalancer({ kind: 'peak-ewma' }, ts, { random: seededRandom(10) });
    const failFrom = 5_000;
    const failUntil = 6_000;
    const picks = runLoad({
      balancer: b,
      start: 0,
      intervalMs: 1,
      requests: 20_000,
      // t0 refuses connections (answered in 1 ms, failed) for a second after 5 s of health.
      serve: (t, now) => (t.id === 't0' && now >= failFrom && now < failUntil ? { rttMs: 1, failed: true } : { rttMs: 2 }),
    });
    const t0 = picks.filter((p) => p.target.id === 't0').map((p) => p.at);
    const failures = t0.filter((at) => at >= failFrom && at < failUntil);
    // Fast failures must not draw the traffic (a plain latency balancer's black hole): a failure never
    // lowers the estimate, so the instance keeps at most the share it had (ejection, not the balancer,
    // takes it out: the gateway's outlier detection sees its run of failures).
    const before = t0.filter((at) => at >= failFrom - 1_000 && at < failFrom).length;
    assert.ok(failures.length >= 5, `sent ${failures.length} requests to the failing instance`);
    assert.ok(failures.length <= before * 1.1, `${failures.length} requests while failing, ${before} in the second before`);
    // Back to its share after answering well again.
    const back = shares(picks, 18_000, 20_000).t0 ?? 0;
    assert.ok(back > 0.2, `share after recovery ${back}`);
  });

  it('shares evenly among equally fast instances', () => {
    const b = createBalancer({ kind: 'peak-ewma' }, targets(3), { random: seededRandom(11) });
    const got = shares(runLoad({ balancer: b, start: 0, intervalMs: 1, requests: 6_000, serve: () => ({ rttMs: 5 }) }));
    for (const id of ['t0', 't1', 't2']) assert.ok(Math.abs((got[id] ?? 0) - 1 / 3) < 0.05, JSON.stringify(got));
  });

  it('gives a heavier instance more requests', () => {
    const ts = [new Target('light', '127.0.0.1', 1, 1, { now: 0 }), new Target('heavy', '127.0.0.1', 2, 3, { now: 0 })];
    const b = createBalancer({ kind: 'peak-ewma' }, ts, { random: seededRandom(12) });
    const got = shares(runLoad({ balancer: b, start: 0, intervalMs: 1, requests: 6_000, serve: () => ({ rttMs: 20 }) }));
    assert.ok((got.heavy ?? 0) > 0.6, JSON.stringify(got));
  });
});
