import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CheckResult } from '../catalog/types.js';
import { delay } from '../clock.js';
import type { HealthSpec } from '../manifest/types.js';
import { FakeClock } from '../testing/fake-clock.js';
import { HealthMonitor, type HealthMonitorOptions } from './monitor.js';
import type { HealthStatus, HealthTransition } from './state.js';
import type { Check, CheckTarget } from './types.js';

type Outcome = Awaited<ReturnType<Check['run']>>;

/** What one run of the fake check does: answer after `takesMs` of clock time, or never (until aborted). */
interface Script {
  outcome: Outcome;
  takesMs?: number | 'forever';
}

/** A Check driven by the fake clock that honours its signal, and records every run. */
class FakeCheck implements Check {
  readonly runs: { at: number; signal: AbortSignal; target: CheckTarget }[] = [];
  running = 0;
  maxRunning = 0;
  #script: (n: number) => Script;
  readonly #clock: FakeClock;

  constructor(clock: FakeClock, script: Script | ((n: number) => Script)) {
    this.#clock = clock;
    this.#script = typeof script === 'function' ? script : () => script;
  }

  async run(target: CheckTarget, signal: AbortSignal): Promise<Outcome> {
    const { outcome, takesMs = 0 } = this.#script(this.runs.length);
    this.runs.push({ at: this.#clock.now(), signal, target });
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await delay(this.#clock, takesMs === 'forever' ? Number.MAX_SAFE_INTEGER : takesMs, signal);
      return outcome;
    } catch {
      return { status: 'critical', output: 'timeout' };
    } finally {
      this.running--;
    }
  }
}

const spec = (over: Partial<HealthSpec> = {}): HealthSpec => ({
  check: { kind: 'http', path: '/health', method: 'GET', headers: {} },
  intervalMs: 1000,
  timeoutMs: 500,
  healthyThreshold: 1,
  unhealthyThreshold: 2,
  startPeriodMs: 0,
  restartAfterMs: 10_000,
  ...over,
});

const target: CheckTarget = { host: '127.0.0.1', port: 4000, cwd: '/', env: {} };
const PASS: Script = { outcome: { status: 'passing', output: 'HTTP 200' } };
const FAIL: Script = { outcome: { status: 'critical', output: 'HTTP 503' } };

interface Seen {
  result: CheckResult;
  status: HealthStatus;
  transition: HealthTransition | undefined;
}

function setup(script: Script | ((n: number) => Script), over: Partial<HealthSpec> = {}, options: Partial<HealthMonitorOptions> = {}) {
  const clock = new FakeClock();
  const t0 = clock.now();
  const check = new FakeCheck(clock, script);
  const seen: Seen[] = [];
  const restartsDue: number[] = [];
  const monitor = new HealthMonitor({
    check,
    spec: spec(over),
    target,
    clock,
    onResult: (result, status, transition) => seen.push({ result, status, transition }),
    onRestartDue: () => restartsDue.push(clock.now() - t0),
    ...options,
  });
  const runTimes = (): number[] => check.runs.map((r) => r.at - t0);
  return { clock, t0, check, seen, restartsDue, monitor, runTimes };
}

describe('HealthMonitor', () => {
  it('checks-after-the-initial-delay-then-an-interval-after-each-finished-check', async () => {
    const { clock, monitor, runTimes, check } = setup({ ...PASS, takesMs: 100 });
    monitor.start();
    await clock.tick(249);
    assert.deepEqual(runTimes(), []);
    await clock.tick(1);
    assert.deepEqual(runTimes(), [250]);
    await clock.tick(3000);
    // Each next check starts intervalMs after the previous one ended (100 ms later).
    assert.deepEqual(runTimes(), [250, 1350, 2450]);
    assert.equal(check.runs[0]?.target, target);
    await monitor.stop();
  });

  it('uses-the-interval-as-initial-delay-when-it-is-shorter', async () => {
    const { clock, monitor, runTimes } = setup(PASS, { intervalMs: 100 });
    monitor.start();
    await clock.tick(350);
    assert.deepEqual(runTimes(), [100, 200, 300]);
    await monitor.stop();
  });

  it('never-overlaps-checks-slower-than-the-interval', async () => {
    const { clock, monitor, check, runTimes } = setup({ ...PASS, takesMs: 2500 }, { intervalMs: 1000, timeoutMs: 5000 });
    monitor.start();
    await clock.tick(10_000);
    assert.equal(check.maxRunning, 1);
    assert.deepEqual(runTimes(), [250, 3750, 7250]);
    await monitor.stop();
  });

  it('reports-results-with-time-duration-status-and-transition', async () => {
    const { clock, t0, monitor, seen } = setup({ ...PASS, takesMs: 40 });
    monitor.start();
    await clock.tick(290);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0], {
      result: { status: 'passing', output: 'HTTP 200', at: new Date(t0 + 290).toISOString(), durationMs: 40 },
      status: 'passing',
      transition: { from: 'starting', to: 'passing' },
    });
    assert.equal(monitor.status, 'passing');
    assert.deepEqual(monitor.lastResult, seen[0]?.result);
    await clock.tick(1040);
    assert.equal(seen.length, 2);
    assert.equal(seen[1]?.transition, undefined);
    await monitor.stop();
  });

  it('aborts-a-check-at-its-timeout-and-counts-it-critical', async () => {
    const { clock, monitor, check, seen } = setup({ ...PASS, takesMs: 'forever' }, { timeoutMs: 500, unhealthyThreshold: 1 });
    monitor.start();
    await clock.tick(250);
    const first = check.runs[0];
    assert.ok(first);
    await clock.tick(499);
    assert.equal(first.signal.aborted, false);
    await clock.tick(1);
    assert.equal(first.signal.aborted, true);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.result.output, 'timeout after 500ms');
    assert.equal(seen[0]?.result.status, 'critical');
    assert.equal(seen[0]?.result.durationMs, 500);
    assert.equal(seen[0]?.status, 'critical');
    // The next check waits a full interval after the timed-out one.
    await clock.tick(999);
    assert.equal(check.runs.length, 1);
    await clock.tick(1);
    assert.equal(check.runs.length, 2);
    await monitor.stop();
  });

  it('stop-aborts-the-check-in-flight-and-leaves-no-timer', async () => {
    const { clock, monitor, check, seen } = setup({ ...PASS, takesMs: 'forever' }, { timeoutMs: 60_000 });
    monitor.start();
    await clock.tick(300);
    const first = check.runs[0];
    assert.ok(first);
    assert.equal(check.running, 1);
    await monitor.stop();
    assert.equal(first.signal.aborted, true);
    assert.equal(check.running, 0, 'stop resolves after the check settled');
    assert.equal(clock.pendingTimers, 0);
    assert.deepEqual(seen, [], 'a check cut short by stop is not a result');
    await clock.tick(10_000);
    assert.equal(check.runs.length, 1);
  });

  it('stop-before-the-first-check-cancels-it', async () => {
    const { clock, monitor, check } = setup(PASS);
    monitor.start();
    await monitor.stop();
    await clock.tick(10_000);
    assert.equal(check.runs.length, 0);
    assert.equal(clock.pendingTimers, 0);
  });

  it('calls-restart-due-once-when-critical-for-restart-after', async () => {
    const { clock, monitor, restartsDue, seen } = setup(FAIL, { intervalMs: 10_000, unhealthyThreshold: 1, restartAfterMs: 3000 });
    monitor.start();
    await clock.tick(250);
    assert.equal(seen[0]?.status, 'critical');
    await clock.tick(2999);
    assert.deepEqual(restartsDue, []);
    // Due before the next check: the monitor's own timer notices, not the next result.
    await clock.tick(1);
    assert.deepEqual(restartsDue, [3250]);
    await clock.tick(60_000);
    assert.deepEqual(restartsDue, [3250], 'once per critical spell');
    await monitor.stop();
  });

  it('calls-restart-due-on-a-result-when-it-is-already-due', async () => {
    const { clock, monitor, restartsDue } = setup(FAIL, { intervalMs: 1000, unhealthyThreshold: 1, restartAfterMs: 0 });
    monitor.start();
    await clock.tick(250);
    assert.deepEqual(restartsDue, [250]);
    await monitor.stop();
  });

  it('a-recovery-cancels-the-pending-restart', async () => {
    const { clock, monitor, restartsDue, seen } = setup((n) => (n === 0 ? FAIL : PASS), {
      intervalMs: 1000,
      unhealthyThreshold: 1,
      restartAfterMs: 3000,
    });
    monitor.start();
    await clock.tick(1250);
    assert.deepEqual(seen.map((s) => s.status), ['critical', 'passing']);
    await clock.tick(10_000);
    assert.deepEqual(restartsDue, []);
    await monitor.stop();
  });

  it('restart-resets-to-starting-with-a-new-start-period', async () => {
    let failing = true;
    const { clock, monitor, restartsDue, seen, check, runTimes } = setup(() => (failing ? FAIL : PASS), {
      intervalMs: 1000,
      unhealthyThreshold: 1,
      startPeriodMs: 2000,
      restartAfterMs: 1000,
    });
    monitor.start();
    await clock.tick(2250);
    // Failures inside the start period (250, 1250) were ignored; the one at 2250 counts.
    assert.deepEqual(seen.map((s) => s.status), ['starting', 'starting', 'critical']);
    await clock.tick(1000);
    assert.deepEqual(restartsDue, [3250]);

    monitor.restart();
    assert.equal(monitor.status, 'starting');
    const before = check.runs.length;
    await clock.tick(250);
    assert.equal(check.runs.length, before + 1, 'a restarted process gets a first check after the initial delay');
    assert.equal(seen.at(-1)?.status, 'starting', 'its failure falls in the new start period');
    failing = false;
    await clock.tick(1000);
    assert.deepEqual(seen.at(-1)?.transition, { from: 'starting', to: 'passing' });
    assert.deepEqual(runTimes().slice(-2), [3500, 4500]);
    await monitor.stop();
  });

  it('restart-drops-the-result-of-a-check-on-the-old-process', async () => {
    const { clock, monitor, check, seen, runTimes } = setup((n) => (n === 0 ? { ...FAIL, takesMs: 'forever' } : PASS), {
      timeoutMs: 60_000,
      unhealthyThreshold: 1,
    });
    monitor.start();
    await clock.tick(300);
    monitor.restart();
    assert.equal(check.runs[0]?.signal.aborted, true);
    await clock.tick(250);
    assert.equal(check.maxRunning, 1);
    assert.deepEqual(runTimes(), [250, 550]);
    assert.deepEqual(seen.map((s) => s.result.output), ['HTTP 200'], 'the aborted check is not reported');
    await monitor.stop();
  });

  it('a-callback-that-throws-does-not-stop-the-checks', async () => {
    const errors: unknown[] = [];
    const { clock, monitor, check } = setup(PASS, {}, {
      onResult: () => {
        throw new Error('listener bug');
      },
      onError: (err) => errors.push(err),
    });
    monitor.start();
    await clock.tick(2300);
    assert.equal(check.runs.length, 3);
    assert.equal(errors.length, 3);
    await monitor.stop();
  });

  it('a-check-that-throws-counts-as-critical', async () => {
    const clock = new FakeClock();
    const seen: CheckResult[] = [];
    const monitor = new HealthMonitor({
      check: { run: () => Promise.reject(new Error('broken check')) },
      spec: spec({ unhealthyThreshold: 1 }),
      target,
      clock,
      onResult: (result) => seen.push(result),
      onRestartDue: () => {},
    });
    monitor.start();
    await clock.tick(250);
    assert.deepEqual(seen.map((r) => [r.status, r.output]), [['critical', 'broken check']]);
    await monitor.stop();
  });

  it('can-start-again-after-stop', async () => {
    const { clock, monitor, runTimes } = setup(PASS);
    monitor.start();
    await clock.tick(250);
    await monitor.stop();
    await clock.tick(5000);
    monitor.start();
    await clock.tick(250);
    assert.deepEqual(runTimes(), [250, 5500]);
    await monitor.stop();
  });
});
