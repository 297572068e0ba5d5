import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { CheckResult } from '../catalog/types.js';
import { FakeClock } from '../testing/fake-clock.js';
import { HealthState, type HealthThresholds } from './state.js';

type Status = CheckResult['status'];

const thresholds = (over: Partial<HealthThresholds> = {}): HealthThresholds => ({
  healthyThreshold: 1,
  unhealthyThreshold: 2,
  startPeriodMs: 0,
  restartAfterMs: 10_000,
  ...over,
});

function feed(state: HealthState, ...statuses: Status[]): void {
  for (const status of statuses) state.observe({ status });
}

describe('HealthState', () => {
  it('starts-as-starting', () => {
    const state = new HealthState(thresholds(), new FakeClock());
    assert.equal(state.status, 'starting');
    assert.equal(state.criticalSince, undefined);
  });

  it('rises-to-passing-after-healthy-threshold-passes', () => {
    const state = new HealthState(thresholds({ healthyThreshold: 3 }), new FakeClock());
    assert.equal(state.observe({ status: 'passing' }), undefined);
    assert.equal(state.observe({ status: 'passing' }), undefined);
    assert.equal(state.status, 'starting');
    assert.deepEqual(state.observe({ status: 'passing' }), { from: 'starting', to: 'passing' });
  });

  it('a-failure-restarts-the-rise', () => {
    const state = new HealthState(thresholds({ healthyThreshold: 2, unhealthyThreshold: 5 }), new FakeClock());
    feed(state, 'passing', 'critical', 'passing');
    assert.equal(state.status, 'starting');
    feed(state, 'passing');
    assert.equal(state.status, 'passing');
  });

  it('stays-passing-until-unhealthy-threshold-failures-in-a-row', () => {
    const state = new HealthState(thresholds({ unhealthyThreshold: 3 }), new FakeClock());
    feed(state, 'passing', 'critical', 'critical', 'passing', 'critical', 'critical');
    assert.equal(state.status, 'passing');
    assert.deepEqual(state.observe({ status: 'critical' }), { from: 'passing', to: 'critical' });
  });

  it('goes-to-warning-at-once-and-clears-the-counters', () => {
    const state = new HealthState(thresholds({ unhealthyThreshold: 2 }), new FakeClock());
    feed(state, 'passing', 'critical');
    assert.deepEqual(state.observe({ status: 'warning' }), { from: 'passing', to: 'warning' });
    assert.equal(state.consecutiveFailures, 0);
    feed(state, 'critical');
    assert.equal(state.status, 'warning');
    feed(state, 'critical');
    assert.equal(state.status, 'critical');
  });

  it('ignores-failures-inside-the-start-period', () => {
    const clock = new FakeClock();
    const state = new HealthState(thresholds({ unhealthyThreshold: 1, startPeriodMs: 5000 }), clock);
    feed(state, 'critical', 'critical');
    clock.advance(4999);
    feed(state, 'critical');
    assert.equal(state.status, 'starting');
    assert.equal(state.consecutiveFailures, 0);
    clock.advance(1);
    assert.deepEqual(state.observe({ status: 'critical' }), { from: 'starting', to: 'critical' });
  });

  it('a-pass-ends-the-start-period', () => {
    const clock = new FakeClock();
    const state = new HealthState(thresholds({ unhealthyThreshold: 1, startPeriodMs: 60_000 }), clock);
    feed(state, 'passing');
    assert.equal(state.inStartPeriod(), false);
    assert.deepEqual(state.observe({ status: 'critical' }), { from: 'passing', to: 'critical' });
  });

  it('restart-is-due-after-restart-after-of-critical', () => {
    const clock = new FakeClock();
    const state = new HealthState(thresholds({ unhealthyThreshold: 1, restartAfterMs: 3000 }), clock);
    feed(state, 'critical');
    assert.equal(state.criticalSince, clock.now());
    clock.advance(2999);
    assert.equal(state.restartDue(clock.now()), false);
    clock.advance(1);
    assert.equal(state.restartDue(clock.now()), true);
    assert.equal(state.restartDueAt(), clock.now());
  });

  it('a-recovery-ends-the-critical-spell', () => {
    const clock = new FakeClock();
    const state = new HealthState(thresholds({ unhealthyThreshold: 1, restartAfterMs: 3000 }), clock);
    feed(state, 'critical');
    clock.advance(2000);
    feed(state, 'passing');
    assert.equal(state.criticalSince, undefined);
    feed(state, 'critical');
    clock.advance(2000);
    assert.equal(state.restartDue(), false);
  });

  it('reset-starts-over-with-a-new-start-period', () => {
    const clock = new FakeClock();
    const state = new HealthState(thresholds({ unhealthyThreshold: 1, startPeriodMs: 1000 }), clock);
    clock.advance(1000);
    feed(state, 'critical');
    assert.equal(state.status, 'critical');
    state.reset();
    assert.equal(state.status, 'starting');
    assert.equal(state.criticalSince, undefined);
    assert.equal(state.restartDue(), false);
    feed(state, 'critical');
    assert.equal(state.status, 'starting');
  });
});

type Step = { kind: 'result'; status: Status; advance: number } | { kind: 'reset'; advance: number };

// Round steps as well as ragged ones, so that time often lands exactly on a start period's end or a restart's due time.
const advanceArb = fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 12 }).map((n) => n * 250));

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ kind: fc.constant('result' as const), status: fc.constantFrom<Status>('passing', 'warning', 'critical', 'critical'), advance: advanceArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const), advance: advanceArb }) },
);

const thresholdsArb: fc.Arbitrary<HealthThresholds> = fc.record({
  healthyThreshold: fc.integer({ min: 1, max: 4 }),
  unhealthyThreshold: fc.integer({ min: 1, max: 4 }),
  startPeriodMs: fc.integer({ min: 0, max: 32 }).map((n) => n * 250),
  restartAfterMs: fc.integer({ min: 0, max: 40 }).map((n) => n * 250),
});

/**
 * Replays steps against the state while keeping, independently, what the rules
 * are stated in terms of; `check` asserts the invariants after every step.
 */
function replay(spec: HealthThresholds, steps: Step[]): void {
  const clock = new FakeClock();
  const state = new HealthState(spec, clock);
  let startedAt = clock.now();
  let passedSinceStart = false;
  let passRun = 0;
  let countedFailRun = 0;
  let criticalEnteredAt: number | undefined;

  for (const step of steps) {
    clock.advance(step.advance);
    const now = clock.now();
    // Restart due exactly when critical, without a break, for restartAfterMs.
    const due = criticalEnteredAt !== undefined && now - criticalEnteredAt >= spec.restartAfterMs;
    assert.equal(state.restartDue(now), due, 'restartDue iff continuously critical for restartAfterMs');

    if (step.kind === 'reset') {
      state.reset();
      startedAt = now;
      passedSinceStart = false;
      passRun = 0;
      countedFailRun = 0;
      criticalEnteredAt = undefined;
      assert.equal(state.status, 'starting');
      continue;
    }

    const before = state.status;
    const counted = passedSinceStart || now - startedAt >= spec.startPeriodMs;
    if (step.status === 'passing') {
      passedSinceStart = true;
      passRun++;
      countedFailRun = 0;
    } else if (step.status === 'warning') {
      passRun = 0;
      countedFailRun = 0;
    } else {
      passRun = 0;
      if (counted) countedFailRun++;
    }

    const transition = state.observe({ status: step.status });
    const after = state.status;
    assert.equal(transition === undefined, before === after, 'a transition is reported iff the status changed');
    if (transition) assert.deepEqual(transition, { from: before, to: after });

    if (after === 'passing') assert.ok(passedSinceStart, 'never passing before a pass');
    if (transition?.to === 'passing') assert.ok(passRun >= spec.healthyThreshold, 'rise needs healthyThreshold passes');
    if (passRun >= spec.healthyThreshold) assert.equal(after, 'passing', 'healthyThreshold passes make it passing');
    if (transition?.to === 'critical') assert.ok(countedFailRun >= spec.unhealthyThreshold, 'fall needs unhealthyThreshold counted failures');
    if (countedFailRun >= spec.unhealthyThreshold) assert.equal(after, 'critical', 'unhealthyThreshold counted failures make it critical');
    if (before === 'passing' && step.status === 'critical' && countedFailRun < spec.unhealthyThreshold) assert.equal(after, 'passing', 'passing survives fewer failures');
    if (step.status === 'warning') assert.equal(after, 'warning', 'a warning shows at once');

    if (transition?.to === 'critical') criticalEnteredAt = now;
    else if (after !== 'critical') criticalEnteredAt = undefined;
    assert.equal(state.criticalSince, criticalEnteredAt);
  }
}

describe('HealthState properties', () => {
  it('holds-its-invariants-for-any-sequence-of-results', () => {
    fc.assert(fc.property(thresholdsArb, fc.array(stepArb, { maxLength: 80 }), replay), { numRuns: 500 });
  });

  it('a-check-that-always-fails-ends-critical-and-due-for-restart', () => {
    fc.assert(
      fc.property(thresholdsArb, fc.integer({ min: 1, max: 2000 }), (spec, interval) => {
        const clock = new FakeClock();
        const state = new HealthState(spec, clock);
        const horizon = spec.startPeriodMs + spec.restartAfterMs + interval * (spec.unhealthyThreshold + 1);
        while (clock.now() - 1_700_000_000_000 <= horizon) {
          state.observe({ status: 'critical' });
          clock.advance(interval);
        }
        assert.equal(state.status, 'critical');
        assert.equal(state.restartDue(), true);
      }),
    );
  });
});
