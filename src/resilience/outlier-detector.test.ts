import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Clock, Timer } from '../clock.js';
import { FakeClock } from '../testing/fake-clock.js';
import { OutlierDetector, type OutcomeKind, type OutlierConfig, type OutlierEvent } from './outlier-detector.js';

const config = (over: Partial<OutlierConfig> = {}): OutlierConfig => ({
  consecutiveErrors: 5,
  consecutiveGatewayErrors: 5,
  baseEjectionMs: 1_000,
  maxEjectionMs: 10_000,
  maxEjectedPercent: 100,
  latency: null,
  panicThresholdPercent: 0,
  ...over,
});

const LATENCY = { factor: 5, minMs: 100, minRequests: 10 };

function setup(over: Partial<OutlierConfig> = {}, ids: readonly string[] = ['a', 'b', 'c', 'd']) {
  const clock = new FakeClock();
  const events: OutlierEvent[] = [];
  const detector = new OutlierDetector(config(over), clock, (event) => events.push(event));
  detector.setInstances(ids);
  return { clock, events, detector };
}

function record(detector: OutlierDetector, id: string, times: number, kind: OutcomeKind = 'error', latencyMs = 1): void {
  for (let i = 0; i < times; i++) detector.record(id, kind, latencyMs);
}

/** One request to each instance per round, 10 ms apart, each at its own latency. */
function rounds(clock: FakeClock, detector: OutlierDetector, count: number, latencies: Record<string, number>): void {
  for (let i = 0; i < count; i++) {
    for (const [id, ms] of Object.entries(latencies)) detector.record(id, 'success', ms);
    clock.advance(10);
  }
}

/** Counts clock reads and timers, to hold record() to its hot-path budget. */
class CountingClock implements Clock {
  reads = 0;
  timers = 0;

  constructor(readonly inner: FakeClock) {}

  now(): number {
    this.reads++;
    return this.inner.now();
  }

  setTimeout(fn: () => void, ms: number): Timer {
    this.timers++;
    return this.inner.setTimeout(fn, ms);
  }

  clearTimeout(timer: Timer): void {
    this.inner.clearTimeout(timer);
  }
}

const instance = (detector: OutlierDetector, id: string) => detector.snapshot().instances.find((i) => i.id === id);

describe('OutlierDetector: consecutive failures', () => {
  it('ejects-after-consecutive-errors', () => {
    const { clock, events, detector } = setup();
    const start = clock.now();
    record(detector, 'a', 4);
    assert.equal(detector.isEjected('a'), false);
    record(detector, 'a', 1);
    assert.equal(detector.isEjected('a'), true);
    assert.deepEqual(events, [{ instance: 'a', kind: 'ejected', reason: 'consecutive-errors', times: 1, until: start + 1_000, at: start }]);
    assert.equal(clock.pendingTimers, 1);
    assert.equal(detector.isEjected('b'), false);
  });

  it('a-success-in-between-resets-the-count', () => {
    const { events, detector } = setup();
    record(detector, 'a', 4);
    record(detector, 'a', 1, 'success');
    record(detector, 'a', 4);
    assert.equal(detector.isEjected('a'), false);
    assert.equal(events.length, 0);
    assert.equal(instance(detector, 'a')?.consecutiveErrors, 4);
  });

  it('ejects-after-consecutive-gateway-errors-with-their-own-reason', () => {
    const { events, detector } = setup({ consecutiveErrors: 10 });
    record(detector, 'a', 3, 'gateway-error');
    // A 5xx answer does not reset the gateway count.
    record(detector, 'a', 1, 'error');
    assert.equal(instance(detector, 'a')?.consecutiveGatewayErrors, 3);
    record(detector, 'a', 2, 'gateway-error');
    assert.equal(detector.isEjected('a'), true);
    assert.equal(events[0]?.reason, 'consecutive-gateway-errors');
  });

  it('counts-a-gateway-error-as-an-error-too', () => {
    const { events, detector } = setup({ consecutiveGatewayErrors: 0 });
    record(detector, 'a', 3, 'error');
    record(detector, 'a', 2, 'gateway-error');
    assert.equal(detector.isEjected('a'), true);
    assert.equal(events[0]?.reason, 'consecutive-errors');
  });

  it('a-success-resets-the-gateway-count', () => {
    const { detector } = setup();
    record(detector, 'a', 4, 'gateway-error');
    record(detector, 'a', 1, 'success');
    record(detector, 'a', 4, 'gateway-error');
    assert.equal(detector.isEjected('a'), false);
    assert.deepEqual([instance(detector, 'a')?.consecutiveErrors, instance(detector, 'a')?.consecutiveGatewayErrors], [4, 4]);
  });

  it('rules-set-to-0-are-off', () => {
    const { clock, detector } = setup({ consecutiveErrors: 0, consecutiveGatewayErrors: 0 });
    record(detector, 'a', 100, 'error');
    record(detector, 'a', 100, 'gateway-error');
    assert.equal(detector.isEjected('a'), false);
    assert.equal(clock.pendingTimers, 0);
  });

  it('failures-while-ejected-are-counted-but-do-not-eject-again', () => {
    const { clock, events, detector } = setup();
    record(detector, 'a', 5);
    record(detector, 'a', 7);
    assert.equal(events.length, 1);
    assert.equal(clock.pendingTimers, 1);
    assert.equal(instance(detector, 'a')?.consecutiveErrors, 7);
    clock.advance(1_000);
    assert.equal(detector.isEjected('a'), false);
    // Still failing without a success in between: the next failure ejects it again.
    record(detector, 'a', 1);
    assert.equal(detector.isEjected('a'), true);
    assert.equal(events.at(-1)?.times, 2);
  });
});

describe('OutlierDetector: ejection time', () => {
  it('returns-by-a-timer-after-the-ejection-time', () => {
    const { clock, events, detector } = setup();
    record(detector, 'a', 5);
    clock.advance(999);
    assert.equal(detector.isEjected('a'), true);
    clock.advance(1);
    assert.equal(detector.isEjected('a'), false);
    assert.deepEqual(events.at(-1), { instance: 'a', kind: 'returned', times: 1, at: clock.now() });
    assert.equal(clock.pendingTimers, 0);
  });

  it('grows-base-times-n-and-is-capped', () => {
    const { clock, events, detector } = setup({ baseEjectionMs: 1_000, maxEjectionMs: 2_500 });
    const durations: number[] = [];
    for (let i = 0; i < 4; i++) {
      record(detector, 'a', 5);
      const ejected = events.at(-1)!;
      durations.push(ejected.until! - ejected.at);
      clock.advance(ejected.until! - ejected.at);
      assert.equal(detector.isEjected('a'), false);
    }
    assert.deepEqual(durations, [1_000, 2_000, 2_500, 2_500]);
    assert.deepEqual(events.filter((e) => e.kind === 'ejected').map((e) => e.times), [1, 2, 3, 4]);
  });

  it('the-multiplier-decays-by-one-per-base-period-unejected', () => {
    const { clock, events, detector } = setup({ baseEjectionMs: 1_000, maxEjectionMs: 10_000 });
    for (const ms of [1_000, 2_000, 3_000]) {
      record(detector, 'a', 5);
      clock.advance(ms);
    }
    assert.equal(instance(detector, 'a')?.times, 3);
    clock.advance(2_000);
    assert.equal(instance(detector, 'a')?.times, 1);
    record(detector, 'a', 5);
    assert.deepEqual([events.at(-1)?.times, events.at(-1)!.until! - events.at(-1)!.at], [2, 2_000]);
    clock.advance(2_000);
    clock.advance(60_000);
    assert.equal(instance(detector, 'a')?.times, 0);
    record(detector, 'a', 5);
    assert.deepEqual([events.at(-1)?.times, events.at(-1)!.until! - events.at(-1)!.at], [1, 1_000]);
  });
});

describe('OutlierDetector: limits and panic', () => {
  it('ejects-at-most-max-ejected-percent-of-3-instances', () => {
    const { clock, detector } = setup({ maxEjectedPercent: 50 }, ['a', 'b', 'c']);
    record(detector, 'a', 5);
    record(detector, 'b', 5);
    record(detector, 'c', 5);
    assert.deepEqual(['a', 'b', 'c'].map((id) => detector.isEjected(id)), [true, false, false]);
    assert.equal(detector.snapshot().ejected, 1);
    clock.advance(1_000);
    // Refused ejections keep their counts: the next failure, once there is room, ejects.
    record(detector, 'b', 1);
    assert.deepEqual(['a', 'b', 'c'].map((id) => detector.isEjected(id)), [false, true, false]);
  });

  it('always-allows-one-ejection-of-two-instances', () => {
    for (const percent of [0, 10, 50]) {
      const { detector } = setup({ maxEjectedPercent: percent }, ['a', 'b']);
      record(detector, 'a', 5);
      record(detector, 'b', 5);
      assert.deepEqual([detector.isEjected('a'), detector.isEjected('b')], [true, false], `at ${percent}%`);
    }
  });

  it('ejects-half-of-4-instances-at-50-percent', () => {
    const { detector } = setup({ maxEjectedPercent: 50 });
    for (const id of ['a', 'b', 'c', 'd']) record(detector, id, 5);
    assert.equal(detector.snapshot().ejected, 2);
  });

  it('never-ejects-the-only-instance', () => {
    const { clock, events, detector } = setup({ latency: LATENCY }, ['a']);
    record(detector, 'a', 50, 'gateway-error');
    record(detector, 'a', 50, 'error', 5_000);
    assert.equal(detector.isEjected('a'), false);
    assert.equal(events.length, 0);
    assert.equal(clock.pendingTimers, 0);
  });

  it('panics-when-the-unejected-share-falls-below-the-threshold-and-back', () => {
    const { clock, detector } = setup({ panicThresholdPercent: 50, maxEjectedPercent: 100 });
    assert.equal(detector.panic, false);
    record(detector, 'a', 5);
    clock.advance(100);
    record(detector, 'b', 5);
    // 2 of 4 left is 50%: not below.
    assert.equal(detector.panic, false);
    record(detector, 'c', 5);
    assert.equal(detector.panic, true);
    assert.equal(detector.snapshot().panic, true);
    clock.advance(900);
    assert.equal(detector.isEjected('a'), false);
    assert.equal(detector.panic, false);
  });

  it('never-panics-at-threshold-0', () => {
    const { detector } = setup({ panicThresholdPercent: 0, maxEjectedPercent: 100 });
    for (const id of ['a', 'b', 'c']) record(detector, id, 5);
    assert.equal(detector.snapshot().ejected, 3);
    assert.equal(detector.panic, false);
  });
});

describe('OutlierDetector: latency', () => {
  it('ejects-an-instance-far-slower-than-its-siblings-after-min-requests', () => {
    const { clock, events, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 9, { a: 2, b: 2, c: 500 });
    assert.equal(detector.isEjected('c'), false);
    rounds(clock, detector, 1, { a: 2, b: 2, c: 500 });
    assert.equal(detector.isEjected('c'), true);
    assert.deepEqual(events.map((e) => [e.instance, e.reason]), [['c', 'latency']]);
  });

  it('does-not-eject-a-uniformly-slow-set', () => {
    const { clock, events, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 50, { a: 500, b: 520, c: 480 });
    assert.equal(events.length, 0);
    assert.equal(instance(detector, 'a')?.latencyMs, 500);
  });

  it('does-not-eject-below-min-ms', () => {
    const { clock, events, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 50, { a: 1, b: 1, c: 90 });
    assert.equal(events.length, 0);
  });

  it('needs-min-requests-on-a-sibling-too', () => {
    const { clock, events, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 9, { a: 2 });
    rounds(clock, detector, 30, { c: 500 });
    assert.equal(events.length, 0);
    assert.deepEqual([instance(detector, 'c')?.latencyMs, instance(detector, 'c')?.samples], [500, 30]);
    rounds(clock, detector, 1, { a: 2, c: 500 });
    assert.equal(detector.isEjected('c'), true);
  });

  it('reacts-to-an-instance-that-turns-slow', () => {
    const { clock, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 20, { a: 2, b: 2, c: 2 });
    rounds(clock, detector, 3, { a: 2, b: 2, c: 1_000 });
    assert.equal(detector.isEjected('c'), true);
  });

  it('gateway-errors-do-not-feed-the-latency-average', () => {
    const { clock, events, detector } = setup({ latency: LATENCY, consecutiveErrors: 0, consecutiveGatewayErrors: 0 }, ['a', 'b', 'c']);
    rounds(clock, detector, 20, { a: 2, b: 2 });
    record(detector, 'c', 20, 'gateway-error', 30_000);
    assert.equal(events.length, 0);
    assert.deepEqual([instance(detector, 'c')?.latencyMs, instance(detector, 'c')?.samples], [null, 0]);
  });

  it('forgets-an-average-with-no-recent-answer', () => {
    const { clock, events, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 9, { a: 2, b: 2, c: 500 });
    clock.advance(10_001);
    assert.deepEqual([instance(detector, 'c')?.latencyMs, instance(detector, 'c')?.samples], [null, 0]);
    rounds(clock, detector, 1, { a: 2, b: 2, c: 500 });
    assert.equal(instance(detector, 'c')?.samples, 1);
    assert.equal(events.length, 0);
  });

  it('an-ejection-starts-the-average-over', () => {
    const { clock, detector } = setup({ latency: LATENCY }, ['a', 'b', 'c']);
    rounds(clock, detector, 10, { a: 2, b: 2, c: 500 });
    assert.equal(detector.isEjected('c'), true);
    assert.equal(instance(detector, 'c')?.samples, 0);
  });
});

describe('OutlierDetector: instances and lifecycle', () => {
  it('set-instances-forgets-removed-ones-and-clears-their-timers', () => {
    const { clock, detector } = setup();
    record(detector, 'a', 5);
    record(detector, 'b', 3);
    detector.setInstances(['b', 'c', 'd', 'e']);
    assert.equal(clock.pendingTimers, 0);
    assert.equal(detector.isEjected('a'), false);
    assert.deepEqual(detector.snapshot().instances.map((i) => i.id), ['b', 'c', 'd', 'e']);
    assert.equal(detector.snapshot().ejected, 0);
    assert.equal(instance(detector, 'b')?.consecutiveErrors, 3);
    detector.setInstances(['a', 'b']);
    assert.deepEqual(instance(detector, 'a'), {
      id: 'a', ejected: false, until: null, times: 0, consecutiveErrors: 0, consecutiveGatewayErrors: 0, latencyMs: null, samples: 0,
    });
  });

  it('a-shrunk-set-returns-the-ejections-it-no-longer-allows', () => {
    const { clock, events, detector } = setup({ maxEjectedPercent: 50 });
    record(detector, 'a', 5);
    clock.advance(10);
    record(detector, 'b', 5);
    detector.setInstances(['a', 'b']);
    assert.deepEqual([detector.isEjected('a'), detector.isEjected('b')], [false, true]);
    assert.deepEqual(events.at(-1), { instance: 'a', kind: 'returned', times: 1, at: clock.now() });
    assert.equal(clock.pendingTimers, 1);
    detector.setInstances(['b']);
    assert.equal(detector.isEjected('b'), false);
    assert.equal(clock.pendingTimers, 0);
  });

  it('close-leaves-no-timers-and-ignores-later-records', () => {
    const { clock, events, detector } = setup();
    record(detector, 'a', 5);
    record(detector, 'b', 5);
    detector.close();
    assert.equal(clock.pendingTimers, 0);
    record(detector, 'c', 10);
    clock.advance(60_000);
    assert.equal(clock.pendingTimers, 0);
    assert.deepEqual(events.map((e) => e.kind), ['ejected', 'ejected']);
  });

  it('survives-a-throwing-listener', () => {
    const clock = new FakeClock();
    const detector = new OutlierDetector(config(), clock, () => {
      throw new Error('listener bug');
    });
    detector.setInstances(['a', 'b']);
    record(detector, 'a', 5);
    assert.equal(detector.isEjected('a'), true);
    clock.advance(1_000);
    assert.equal(detector.isEjected('a'), false);
    assert.equal(clock.pendingTimers, 0);
  });

  it('ignores-unknown-instances', () => {
    const { clock, detector } = setup();
    record(detector, 'nope', 10);
    assert.equal(detector.isEjected('nope'), false);
    assert.equal(clock.pendingTimers, 0);
    assert.equal(detector.snapshot().instances.length, 4);
  });

  it('rejects-an-invalid-config-when-built', () => {
    const clock = new FakeClock();
    for (const bad of [
      config({ consecutiveErrors: -1 }),
      config({ consecutiveGatewayErrors: 1.5 }),
      config({ baseEjectionMs: 0 }),
      config({ maxEjectionMs: Number.NaN }),
      config({ maxEjectedPercent: 101 }),
      config({ panicThresholdPercent: -1 }),
      config({ latency: { ...LATENCY, factor: 1 } }),
      config({ latency: { ...LATENCY, minRequests: 0 } }),
    ]) {
      assert.throws(() => new OutlierDetector(bad, clock), RangeError);
    }
  });

  it('reads-the-clock-at-most-once-and-starts-no-timer-per-record', () => {
    const clock = new CountingClock(new FakeClock());
    let ejections = 0;
    const detector = new OutlierDetector(config({ latency: LATENCY, maxEjectedPercent: 50 }), clock, (e) => {
      if (e.kind === 'ejected') ejections++;
    });
    detector.setInstances(['a', 'b', 'c', 'd']);
    const kinds: OutcomeKind[] = ['success', 'success', 'error', 'gateway-error', 'success', 'error', 'error', 'error', 'error', 'error'];
    let mostReads = 0;
    for (let i = 0; i < 2_000; i++) {
      const before = clock.reads;
      detector.record(['a', 'b', 'c', 'd'][i % 4]!, kinds[i % kinds.length]!, i % 4 === 3 ? 900 : 3);
      mostReads = Math.max(mostReads, clock.reads - before);
      if (i % 10 === 0) clock.inner.advance(7);
    }
    assert.ok(ejections > 0);
    assert.equal(mostReads, 1);
    assert.equal(clock.timers, ejections);
  });
});

describe('OutlierDetector: invariants', () => {
  it('never-ejects-more-than-allowed-and-keeps-one-timer-per-ejection', () => {
    const ids = ['a', 'b', 'c', 'd', 'e', 'f'];
    const op = fc.oneof(
      { weight: 8, arbitrary: fc.record({
        op: fc.constant('record' as const),
        id: fc.constantFrom(...ids),
        kind: fc.constantFrom<OutcomeKind>('success', 'error', 'error', 'gateway-error'),
        latencyMs: fc.constantFrom(1, 2, 50, 500, 5_000),
      }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 1_500 }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('instances' as const), ids: fc.subarray(ids) }) },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 100 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        fc.subarray(ids, { minLength: 1 }),
        fc.array(op, { minLength: 20, maxLength: 200, size: 'max' }),
        (percent, errors, gatewayErrors, initial, ops) => {
          const clock = new FakeClock();
          const detector = new OutlierDetector(
            config({
              consecutiveErrors: errors,
              consecutiveGatewayErrors: gatewayErrors,
              maxEjectedPercent: percent,
              latency: { factor: 3, minMs: 10, minRequests: 2 },
              panicThresholdPercent: 50,
            }),
            clock,
          );
          detector.setInstances(initial);
          for (const step of ops) {
            if (step.op === 'record') detector.record(step.id, step.kind, step.latencyMs);
            else if (step.op === 'advance') clock.advance(step.ms);
            else detector.setInstances(step.ids);
            const snap = detector.snapshot();
            const n = snap.instances.length;
            const allowed = n < 2 ? 0 : Math.max(1, Math.floor((n * percent) / 100));
            assert.ok(snap.ejected <= allowed, `${snap.ejected} ejected of ${n} at ${percent}%`);
            assert.equal(snap.instances.filter((i) => i.ejected).length, snap.ejected);
            assert.equal(clock.pendingTimers, snap.ejected);
          }
          detector.close();
          assert.equal(clock.pendingTimers, 0);
        },
      ),
    );
  });
});
