import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FakeClock } from '../testing/fake-clock.js';
import { CircuitBreaker, type BreakerConfig, type BreakerState, type BreakerTransition } from './circuit-breaker.js';

const base: BreakerConfig = {
  consecutiveFailures: 0,
  failureRatio: 0,
  windowMs: 10_000,
  minRequests: 0,
  openMs: 1_000,
  maxOpenMs: 5_000,
  halfOpenRequests: 1,
};

function setup(config: Partial<BreakerConfig>): { breaker: CircuitBreaker; clock: FakeClock; transitions: BreakerTransition[] } {
  const clock = new FakeClock();
  const transitions: BreakerTransition[] = [];
  const breaker = new CircuitBreaker({ ...base, ...config }, clock, (t) => transitions.push(t));
  return { breaker, clock, transitions };
}

function fail(breaker: CircuitBreaker, times: number): void {
  for (let i = 0; i < times; i++) breaker.onFailure();
}

function succeed(breaker: CircuitBreaker, times: number): void {
  for (let i = 0; i < times; i++) breaker.onSuccess();
}

describe('CircuitBreaker', () => {
  it('opens-after-n-consecutive-failures-and-a-success-resets-the-count', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 3 });
    fail(breaker, 2);
    breaker.onSuccess();
    fail(breaker, 2);
    assert.equal(breaker.state, 'closed');
    assert.equal(breaker.tryAcquire(), true);
    breaker.onFailure();
    assert.equal(breaker.state, 'open');
    assert.equal(breaker.tryAcquire(), false);
    assert.deepEqual(transitions, [{ from: 'closed', to: 'open', reason: '3 consecutive failures', at: clock.now() }]);
    assert.deepEqual(breaker.snapshot(), {
      state: 'open',
      consecutiveFailures: 3,
      windowRequests: 0,
      windowFailures: 0,
      openUntil: clock.now() + 1_000,
      timesOpened: 1,
    });
  });

  it('opens-on-the-failure-ratio-only-once-the-window-holds-min-requests', () => {
    const { breaker, transitions } = setup({ failureRatio: 0.5, minRequests: 10 });
    fail(breaker, 8);
    assert.equal(breaker.state, 'closed', '8 requests are below minRequests, whatever their ratio');
    succeed(breaker, 8);
    assert.equal(breaker.snapshot().windowRequests, 16);
    breaker.onFailure();
    assert.equal(breaker.state, 'open');
    assert.equal(transitions[0]?.reason, 'failure ratio 0.53 over 10s (17 requests)');
  });

  it('opens-at-exactly-the-ratio-despite-floating-point', () => {
    const { breaker } = setup({ failureRatio: 0.7, minRequests: 10 });
    succeed(breaker, 3);
    fail(breaker, 6);
    assert.equal(breaker.state, 'closed');
    breaker.onFailure();
    assert.equal(breaker.state, 'open', '7 of 10 is a ratio of 0.7');
  });

  it('forgets-results-older-than-the-window-bucket-by-bucket', () => {
    const { breaker, clock } = setup({ failureRatio: 0.5, minRequests: 4 });
    fail(breaker, 1);
    succeed(breaker, 1);
    clock.advance(5_000);
    succeed(breaker, 2);
    clock.advance(4_999);
    assert.deepEqual(pick(breaker), { windowRequests: 4, windowFailures: 1 });
    clock.advance(1);
    assert.deepEqual(pick(breaker), { windowRequests: 2, windowFailures: 0 }, 'the first bucket left the window');
    // Had the old failure still counted, 3 of 4 would open the breaker.
    fail(breaker, 1);
    succeed(breaker, 1);
    fail(breaker, 1);
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(pick(breaker), { windowRequests: 5, windowFailures: 2 });
  });

  it('empties-the-window-after-an-idle-period-far-longer-than-it', () => {
    const { breaker, clock } = setup({ failureRatio: 0.5, minRequests: 3 });
    for (const idle of [10_000, 123_456_789, 10 * 10_000 + 1_000, 3 * 10_000]) {
      succeed(breaker, 2);
      fail(breaker, 1);
      assert.equal(breaker.state, 'closed');
      clock.advance(idle);
      assert.deepEqual(pick(breaker), { windowRequests: 0, windowFailures: 0 }, `after ${idle} ms idle`);
    }
    fail(breaker, 2);
    assert.equal(breaker.state, 'closed', 'two failures are below minRequests in a fresh window');
    breaker.onFailure();
    assert.equal(breaker.state, 'open');
  });

  it('ignores-results-that-arrive-while-open', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 1 });
    breaker.onFailure();
    const opened = breaker.snapshot();
    clock.advance(999);
    succeed(breaker, 5);
    fail(breaker, 5);
    assert.deepEqual(breaker.snapshot(), opened);
    assert.equal(transitions.length, 1);
  });

  it('turns-half-open-lazily-and-admits-only-halfOpenRequests-trials', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 1, halfOpenRequests: 2 });
    breaker.onFailure();
    clock.advance(999);
    assert.equal(breaker.tryAcquire(), false);
    clock.advance(1);
    assert.equal(transitions.length, 1, 'no timer: nothing happens until the breaker is read');
    assert.deepEqual([breaker.tryAcquire(), breaker.tryAcquire(), breaker.tryAcquire()], [true, true, false]);
    assert.deepEqual(transitions[1], { from: 'open', to: 'half-open', reason: 'open for 1000ms', at: clock.now() });
    breaker.onSuccess();
    assert.equal(breaker.state, 'half-open', 'one success of two needed');
    assert.equal(breaker.tryAcquire(), false, 'the second trial is still out');
    clock.advance(7);
    breaker.onSuccess();
    assert.equal(breaker.state, 'closed');
    assert.deepEqual(transitions[2], { from: 'half-open', to: 'closed', reason: '2 trials succeeded', at: clock.now() });
    assert.deepEqual(pick(breaker), { windowRequests: 0, windowFailures: 0 });
    assert.equal(breaker.snapshot().consecutiveFailures, 0);
  });

  it('counts-a-late-success-toward-closing-without-admitting-an-extra-trial', () => {
    const { breaker, clock } = setup({ consecutiveFailures: 1, halfOpenRequests: 2 });
    assert.equal(breaker.tryAcquire(), true, 'a request admitted while closed, still in flight');
    breaker.onFailure();
    clock.advance(1_000);
    assert.deepEqual([breaker.tryAcquire(), breaker.tryAcquire()], [true, true]);
    breaker.onSuccess();
    assert.equal(breaker.state, 'half-open', 'the late success is one of the two needed');
    assert.equal(breaker.tryAcquire(), false, 'both trials are still in flight');
    breaker.onSuccess();
    assert.equal(breaker.state, 'closed');
  });

  it('frees-a-half-open-slot-on-cancel-without-counting-it', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 1 });
    breaker.onFailure();
    clock.advance(1_000);
    assert.equal(breaker.tryAcquire(), true);
    assert.equal(breaker.tryAcquire(), false);
    breaker.onCancel();
    assert.equal(breaker.state, 'half-open');
    assert.equal(breaker.tryAcquire(), true);
    assert.equal(transitions.length, 2);
  });

  it('doubles-the-open-period-on-each-failed-trial-up-to-the-cap-and-resets-it-on-close', () => {
    const { breaker, clock, transitions } = setup({ consecutiveFailures: 1 });
    breaker.onFailure();
    const periods: number[] = [];
    for (let i = 0; i < 5; i++) {
      const { openUntil } = breaker.snapshot();
      assert.ok(openUntil !== null);
      periods.push(openUntil - clock.now());
      clock.advance(openUntil - clock.now());
      assert.equal(breaker.tryAcquire(), true);
      breaker.onFailure();
    }
    assert.deepEqual(periods, [1_000, 2_000, 4_000, 5_000, 5_000]);
    assert.equal(transitions.at(-1)?.reason, 'trial failed');
    clock.advance(5_000);
    assert.equal(breaker.tryAcquire(), true);
    breaker.onSuccess();
    assert.equal(transitions.at(-1)?.reason, '1 trial succeeded');
    breaker.onFailure();
    assert.equal(breaker.snapshot().openUntil, clock.now() + 1_000);
    assert.equal(breaker.snapshot().timesOpened, 7);
  });

  it('reads-the-clock-at-most-once-per-call-and-not-at-all-to-admit-while-closed (property)', () => {
    const call = fc.tuple(fc.constantFrom('tryAcquire', 'onSuccess', 'onFailure', 'onCancel', 'state'), fc.nat(1_500));
    fc.assert(
      fc.property(fc.array(call, { maxLength: 300, size: 'max' }), (calls) => {
        const clock = new FakeClock();
        let reads = 0;
        let state: BreakerState = 'closed';
        const counting = { now: () => (reads++, clock.now()) };
        const config = { ...base, consecutiveFailures: 2, failureRatio: 0.5, minRequests: 4, halfOpenRequests: 2 };
        const breaker = new CircuitBreaker(config, counting, (t) => (state = t.to));
        for (const [name, advance] of calls) {
          clock.advance(advance);
          const closed = state === 'closed';
          reads = 0;
          if (name === 'state') void breaker.state;
          else breaker[name]();
          assert.ok(reads <= 1, `${name} read the clock ${reads} times`);
          if (closed && name === 'tryAcquire') assert.equal(reads, 0);
        }
      }),
    );
  });

  it('keeps-no-window-and-reads-no-clock-for-a-success-when-the-ratio-rule-is-off', () => {
    const clock = new FakeClock();
    let reads = 0;
    const breaker = new CircuitBreaker({ ...base, consecutiveFailures: 5 }, { now: () => (reads++, clock.now()) });
    reads = 0;
    for (let i = 0; i < 100; i++) {
      breaker.tryAcquire();
      breaker.onSuccess();
    }
    assert.equal(reads, 0);
    assert.deepEqual(pick(breaker), { windowRequests: 0, windowFailures: 0 });
  });

  it('rejects-an-invalid-config-when-built', () => {
    const clock = new FakeClock();
    for (const bad of [
      { consecutiveFailures: -1 },
      { consecutiveFailures: 1.5 },
      { failureRatio: 1.2 },
      { failureRatio: Number.NaN },
      { windowMs: 0 },
      { minRequests: -1 },
      { openMs: 0 },
      { maxOpenMs: 500 },
      { halfOpenRequests: 0 },
    ]) {
      assert.throws(() => new CircuitBreaker({ ...base, ...bad }, clock), RangeError, JSON.stringify(bad));
    }
  });

  it('counts-exactly-the-results-of-the-last-10-buckets-under-any-timing (property)', () => {
    const step = fc.tuple(fc.oneof(fc.nat(2_500), fc.nat(10 ** 9), fc.constant(0)), fc.boolean());
    fc.assert(
      fc.property(fc.constantFrom(10_000, 1_000, 2_500, 7), fc.array(step, { maxLength: 200, size: 'max' }), (windowMs, steps) => {
        const clock = new FakeClock();
        // The ratio rule is on, so the window is kept, but can never apply.
        const breaker = new CircuitBreaker({ ...base, failureRatio: 1, minRequests: Number.MAX_SAFE_INTEGER, windowMs }, clock);
        const bucket = (t: number): number => Math.floor(t / (windowMs / 10));
        const seen: { at: number; failed: boolean }[] = [];
        for (const [advance, failed] of steps) {
          clock.advance(advance);
          if (failed) breaker.onFailure();
          else breaker.onSuccess();
          seen.push({ at: clock.now(), failed });
          const live = seen.filter((r) => bucket(r.at) > bucket(clock.now()) - 10);
          assert.deepEqual(pick(breaker), { windowRequests: live.length, windowFailures: live.filter((r) => r.failed).length });
        }
      }),
    );
  });

  it('moves-only-along-legal-transitions-and-never-has-more-trials-than-allowed (property)', () => {
    const legal = new Set(['closed>open', 'open>half-open', 'half-open>open', 'half-open>closed']);
    const end = (kind: 'success' | 'failure' | 'cancel') => fc.record({ kind: fc.constant(kind), which: fc.nat() });
    // Weighted so that requests often outlive a state: the late results are where breakers go wrong.
    const op = fc.oneof(
      { weight: 4, arbitrary: fc.constant({ kind: 'acquire' as const }) },
      { weight: 2, arbitrary: end('success') },
      { weight: 2, arbitrary: end('failure') },
      { weight: 1, arbitrary: end('cancel') },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.nat(6_000) }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(op, { maxLength: 300, size: 'max' }), (halfOpenRequests, ops) => {
        const { breaker, clock, transitions } = setup({ consecutiveFailures: 2, failureRatio: 0.5, minRequests: 4, halfOpenRequests });
        // Requests admitted and not yet ended, each with the half-open period it
        // was admitted in: while half-open, the last transition is the one into
        // it, so the count of transitions names the period (-1: admitted closed).
        const inFlight: number[] = [];
        // Results carry no token: a cancel from a request admitted before this
        // period frees a slot all the same, so each one raises the bound.
        const staleCancels = new Map<number, number>();
        for (const o of ops) {
          const period = breaker.state === 'half-open' ? transitions.length : -1;
          if (o.kind === 'advance') clock.advance(o.ms);
          else if (o.kind === 'acquire') {
            if (breaker.tryAcquire()) inFlight.push(breaker.state === 'half-open' ? transitions.length : -1);
          } else if (inFlight.length > 0) {
            const [admittedIn] = inFlight.splice(o.which % inFlight.length, 1);
            if (o.kind === 'success') breaker.onSuccess();
            else if (o.kind === 'failure') breaker.onFailure();
            else {
              if (period !== -1 && admittedIn !== period) staleCancels.set(period, (staleCancels.get(period) ?? 0) + 1);
              breaker.onCancel();
            }
          }
          if (breaker.state === 'half-open') {
            const trials = inFlight.filter((p) => p === transitions.length).length;
            assert.ok(trials <= halfOpenRequests + (staleCancels.get(transitions.length) ?? 0), `${trials} trials in flight`);
          }
        }
        let state: BreakerState = 'closed';
        for (const t of transitions) {
          assert.equal(t.from, state);
          assert.ok(legal.has(`${t.from}>${t.to}`), `${t.from} → ${t.to}`);
          state = t.to;
        }
        assert.equal(state, breaker.state);
      }),
    );
  });
});

function pick(breaker: CircuitBreaker): { windowRequests: number; windowFailures: number } {
  const { windowRequests, windowFailures } = breaker.snapshot();
  return { windowRequests, windowFailures };
}
