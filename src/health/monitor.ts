import type { CheckResult } from '../catalog/types.js';
import type { Clock, Timer } from '../clock.js';
import type { HealthSpec } from '../manifest/types.js';
import { describeError } from './checks/tcp.js';
import { HealthState, type HealthStatus, type HealthTransition } from './state.js';
import type { Check, CheckTarget } from './types.js';

/**
 * Delay before the first check of a (re)started process when the interval is
 * longer. Most processes bind their port within a few hundred milliseconds, and
 * an early failure inside the start period costs nothing, so waiting a whole
 * interval would only delay the first `passing` and with it the first request.
 */
export const DEFAULT_INITIAL_DELAY_MS = 250;

export interface HealthMonitorOptions {
  check: Check;
  spec: HealthSpec;
  target: CheckTarget;
  clock: Clock;
  /** Every finished check, with the status after it and the change it caused. Not called for checks cut short by `stop()` or `restart()`. */
  onResult(result: CheckResult, status: HealthStatus, transition: HealthTransition | undefined): void;
  /** Called once per critical spell, when it has lasted `restartAfterMs`. */
  onRestartDue(): void;
  /** Default `min(intervalMs, DEFAULT_INITIAL_DELAY_MS)`. */
  initialDelayMs?: number;
  /** Where an exception thrown by a callback goes; the monitor keeps running. Default: a process warning. */
  onError?(err: unknown): void;
}

type Phase = 'idle' | 'running' | 'stopped';

/**
 * Runs one instance's check on the clock and keeps its `HealthState`. Checks
 * never overlap: the next is scheduled `intervalMs` after the previous one
 * finished, and a check that outlives `timeoutMs` is aborted (its work
 * cancelled through the signal) and counts as critical.
 */
export class HealthMonitor {
  readonly #options: HealthMonitorOptions;
  readonly #state: HealthState;
  readonly #initialDelayMs: number;
  #phase: Phase = 'idle';
  #nextTimer: Timer | undefined;
  #restartTimer: Timer | undefined;
  #restartNotified = false;
  #inFlight: { controller: AbortController; done: Promise<void> } | undefined;
  /** Bumped by `stop()` and `restart()`: a check that began before belongs to another process or run. */
  #generation = 0;
  #lastResult: CheckResult | undefined;

  constructor(options: HealthMonitorOptions) {
    this.#options = options;
    this.#state = new HealthState(options.spec, options.clock);
    this.#initialDelayMs = options.initialDelayMs ?? Math.min(options.spec.intervalMs, DEFAULT_INITIAL_DELAY_MS);
  }

  get status(): HealthStatus {
    return this.#state.status;
  }

  get lastResult(): CheckResult | undefined {
    return this.#lastResult;
  }

  /** Begins checking: the first check after the initial delay. A second call is a no-op. */
  start(): void {
    if (this.#phase === 'running') return;
    this.#phase = 'running';
    this.#generation++;
    if (!this.#inFlight) this.#schedule(this.#initialDelayMs);
    // else: the check `stop()` aborted is still settling; its end schedules the next one.
  }

  /** Cancels the timers and aborts the check in flight; resolves once that check has settled. */
  async stop(): Promise<void> {
    this.#phase = 'stopped';
    this.#generation++;
    this.#clearTimers();
    const inFlight = this.#inFlight;
    if (!inFlight) return;
    inFlight.controller.abort(new Error('health monitor stopped'));
    await inFlight.done;
  }

  /**
   * The instance's process was restarted: back to `starting` with a new start
   * period. A check in flight probed the old process: it is aborted and its
   * result dropped.
   */
  restart(): void {
    this.#generation++;
    this.#state.reset();
    this.#restartNotified = false;
    this.#clearTimers();
    this.#inFlight?.controller.abort(new Error('instance restarted'));
    if (this.#phase === 'running' && !this.#inFlight) this.#schedule(this.#initialDelayMs);
  }

  #schedule(ms: number): void {
    this.#nextTimer = this.#options.clock.setTimeout(() => {
      this.#nextTimer = undefined;
      this.#runCheck();
    }, ms);
  }

  #runCheck(): void {
    const controller = new AbortController();
    const generation = this.#generation;
    const done = this.#check(controller, generation).then(
      () => this.#afterCheck(generation),
      (err: unknown) => {
        this.#callback(() => {
          throw err;
        });
        this.#afterCheck(generation);
      },
    );
    this.#inFlight = { controller, done };
  }

  #afterCheck(generation: number): void {
    this.#inFlight = undefined;
    if (this.#phase !== 'running' || this.#nextTimer) return;
    // After restart() (or stop() then start()) during a check comes a first check, not an interval.
    this.#schedule(generation === this.#generation ? this.#options.spec.intervalMs : this.#initialDelayMs);
  }

  /** Runs the check once and reports it, unless stop() or restart() came first. */
  async #check(controller: AbortController, generation: number): Promise<void> {
    const { check, target, clock, spec } = this.#options;
    const startedAt = clock.now();
    let timedOut = false;
    const timeout = clock.setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`timeout after ${spec.timeoutMs}ms`));
    }, spec.timeoutMs);

    let outcome: Awaited<ReturnType<Check['run']>>;
    try {
      outcome = await check.run(target, controller.signal);
    } catch (err) {
      // The Check contract says run never throws; a broken check still yields a result.
      outcome = { status: 'critical', output: describeError(err) };
    } finally {
      clock.clearTimeout(timeout);
    }

    if (generation !== this.#generation) return;
    if (timedOut) outcome = { status: 'critical', output: `timeout after ${spec.timeoutMs}ms` };

    const now = clock.now();
    const result: CheckResult = {
      status: outcome.status,
      output: outcome.output,
      at: new Date(now).toISOString(),
      durationMs: now - startedAt,
    };
    this.#lastResult = result;
    const transition = this.#state.observe(result);
    this.#callback(() => this.#options.onResult(result, this.#state.status, transition));
    this.#watchRestart();
  }

  /** After every result: notify when a restart is due, or arm a timer for the moment it will be. */
  #watchRestart(): void {
    const { clock } = this.#options;
    const dueAt = this.#state.restartDueAt();
    if (dueAt === undefined) {
      this.#restartNotified = false;
      this.#clearRestartTimer();
      return;
    }
    if (this.#restartNotified || this.#restartTimer) return;
    if (this.#state.restartDue(clock.now())) {
      this.#notifyRestart();
      return;
    }
    this.#restartTimer = clock.setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#phase === 'running' && !this.#restartNotified && this.#state.restartDue(clock.now())) this.#notifyRestart();
    }, dueAt - clock.now());
  }

  #notifyRestart(): void {
    this.#restartNotified = true;
    this.#callback(() => this.#options.onRestartDue());
  }

  #callback(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (this.#options.onError) this.#options.onError(err);
      else process.emitWarning(`health monitor callback threw: ${describeError(err)}`);
    }
  }

  #clearRestartTimer(): void {
    if (this.#restartTimer) this.#options.clock.clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
  }

  #clearTimers(): void {
    if (this.#nextTimer) this.#options.clock.clearTimeout(this.#nextTimer);
    this.#nextTimer = undefined;
    this.#clearRestartTimer();
  }
}
