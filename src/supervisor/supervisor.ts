import type { InstanceRecord } from '../catalog/types.js';
import { formatDuration } from '../duration.js';
import { changedInstanceFields } from '../manifest/diff.js';
import type { HealthSpec, VersionSpec } from '../manifest/types.js';
import { Events } from '../telemetry/events.js';
import { InstanceController, type InstanceDeps } from './instance.js';

/** A version whose rolling replacement stopped: its old instances keep running. */
export interface RolloutFailure {
  /** `group/service@version`. */
  key: string;
  reason: string;
}

/** What one `apply` did. */
export interface ApplyResult {
  /** Instances started for added versions and scale-ups. */
  started: number;
  /** Instances stopped for removed versions and scale-downs. */
  stopped: number;
  /** Old instances replaced by one started with the new spec (each a start and a stop). */
  replaced: number;
  failed: RolloutFailure[];
}

/** The least a rollout waits for a new instance to pass. */
export const MIN_ROLLOUT_WAIT_MS = 30_000;
/** Added to the health-derived bound: time for the process itself to start and bind its port. */
const ROLLOUT_MARGIN_MS = 10_000;

/**
 * How long a rolling replacement waits for a new instance to become passing
 * before giving up: its start period, enough checks to rise
 * (`healthyThreshold`) plus as many failures as it may have before it is
 * critical (`unhealthyThreshold`), each taking up to interval + timeout, plus
 * a margin for the process to start; never less than 30 s.
 */
export function rolloutWaitMs(health: HealthSpec): number {
  const checks = (health.healthyThreshold + health.unhealthyThreshold) * (health.intervalMs + health.timeoutMs);
  return Math.max(MIN_ROLLOUT_WAIT_MS, health.startPeriodMs + checks + ROLLOUT_MARGIN_MS);
}

/**
 * Keeps the declared number of instances of every service version running.
 * It owns the controllers; their state is published through the catalog.
 */
export class Supervisor {
  readonly #deps: InstanceDeps;
  /** Controllers by version key (`group/service@version`), oldest first. */
  readonly #byVersion = new Map<string, InstanceController[]>();
  /** The tail of the apply queue: applies run one after the other. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Aborted when the node stops: rollouts stop waiting for new instances. */
  readonly #closing = new AbortController();
  #closed = false;

  constructor(deps: InstanceDeps) {
    this.#deps = deps;
  }

  /**
   * Reconciles running instances with `specs`, after any apply still running:
   *
   * - a version no longer declared: every instance stopped;
   * - fewer or more instances than `replicas`: the missing started, the extra
   *   stopped (newest first);
   * - an instance started with another command, cwd, env, health, restart or
   *   stop spec: replaced one at a time — a new instance is started and, once
   *   it is `passing`, an old one is drained and stopped, so at no moment are
   *   fewer instances passing than before. A new instance that is not passing
   *   within `rolloutWaitMs` or ends `failed`/`stopped` is stopped, the old
   *   ones are left running, and the version is listed in `failed`.
   *
   * Versions are reconciled side by side; one failing does not stop the others.
   */
  apply(specs: readonly VersionSpec[]): Promise<ApplyResult> {
    const run = this.#queue.then(() => this.#apply(specs));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #apply(specs: readonly VersionSpec[]): Promise<ApplyResult> {
    const result: ApplyResult = { started: 0, stopped: 0, replaced: 0, failed: [] };
    if (this.#closed) return result;
    const wanted = new Map(specs.map((s) => [s.key, s]));
    const work: Promise<void>[] = [];
    for (const [key, controllers] of this.#byVersion) {
      if (!wanted.has(key)) {
        this.#byVersion.delete(key);
        result.stopped += controllers.length;
        work.push(...controllers.map((c) => c.stop('removed from the manifest')));
      }
    }
    for (const spec of specs) work.push(this.#reconcile(spec, result));
    await Promise.all(work);
    return result;
  }

  async #reconcile(spec: VersionSpec, result: ApplyResult): Promise<void> {
    const controllers = this.#byVersion.get(spec.key) ?? [];
    this.#byVersion.set(spec.key, controllers);
    const stale = controllers.filter((c) => changedInstanceFields(c.spec, spec).length > 0);
    const work: Promise<void>[] = [];

    // Too many: the stale go first (they would be replaced anyway), then the newest.
    while (controllers.length > spec.replicas) {
      const victim = stale.pop() ?? controllers[controllers.length - 1];
      if (!victim) break;
      remove(controllers, victim);
      result.stopped++;
      work.push(victim.stop('scaled down'));
    }

    let rolledOut = true;
    if (stale.length > 0) rolledOut = await this.#rollout(spec, controllers, stale, result);

    // A version whose new spec did not pass is not scaled up with it.
    while (rolledOut && !this.#closed && controllers.length < spec.replicas) {
      const controller = new InstanceController(spec, this.#deps);
      controllers.push(controller);
      result.started++;
      work.push(controller.start());
    }
    await Promise.all(work);
  }

  /** Replaces `stale` one at a time (surge one, then stop one); false when a new instance did not pass. */
  async #rollout(spec: VersionSpec, controllers: InstanceController[], stale: InstanceController[], result: ApplyResult): Promise<boolean> {
    const log = this.#deps.logger.child({ group: spec.group, service: spec.service, version: spec.version });
    const fields = [...new Set(stale.flatMap((c) => changedInstanceFields(c.spec, spec)))];
    log.info({ event: Events.rolloutStarted, key: spec.key, instances: stale.length, fields }, `replacing ${stale.length} instance(s): ${fields.join(', ')} changed`);
    let replaced = 0;
    for (const old of stale) {
      if (this.#closed) return false;
      const outcome = await this.#surge(spec, controllers);
      if (typeof outcome === 'string') {
        result.failed.push({ key: spec.key, reason: outcome });
        log.error(
          { event: Events.rolloutFailed, key: spec.key, reason: outcome, replaced, kept: stale.length - replaced },
          `rollout failed: ${outcome}; ${stale.length - replaced} old instance(s) keep running`,
        );
        return false;
      }
      remove(controllers, old);
      await old.stop(`replaced by ${outcome.id}`);
      replaced++;
      result.replaced++;
      log.info({ event: Events.rolloutReplaced, key: spec.key, from: old.id, to: outcome.id }, `${old.id} replaced by ${outcome.id}`);
    }
    log.info({ event: Events.rolloutDone, key: spec.key, replaced }, `replaced ${replaced} instance(s)`);
    return true;
  }

  /** Starts one instance of `spec` beside the others and waits until it passes; the reason when it does not. */
  async #surge(spec: VersionSpec, controllers: InstanceController[]): Promise<InstanceController | string> {
    const { clock } = this.#deps;
    const next = new InstanceController(spec, this.#deps);
    controllers.push(next);
    const waitMs = rolloutWaitMs(spec.health);
    const wait = new AbortController();
    const timer = clock.setTimeout(() => wait.abort(new Error(`not passing after ${formatDuration(waitMs)}`)), waitMs);
    const onClose = (): void => wait.abort(new Error('the node is stopping'));
    this.#closing.signal.addEventListener('abort', onClose, { once: true });
    let reason: string;
    try {
      await next.start();
      const record = await next.waitForStatus((r) => r.status === 'passing' || r.status === 'failed' || r.status === 'stopped', wait.signal);
      if (record.status === 'passing') return next;
      reason = `${record.status}${record.reason ? `: ${record.reason}` : ''}`;
    } catch (err) {
      reason = `${(err as Error).message}${describeLast(next.record)}`;
    } finally {
      clock.clearTimeout(timer);
      this.#closing.signal.removeEventListener('abort', onClose);
    }
    remove(controllers, next);
    await next.stop(`rollout failed: ${reason}`);
    return `new instance ${next.id} ${reason}`;
  }

  /** Every controller, for inspection. */
  controllers(): InstanceController[] {
    return [...this.#byVersion.values()].flat();
  }

  /**
   * Refuses further applies and ends the rollouts in progress (as failed: the
   * node is stopping) without stopping any instance; `stopAll` does that.
   */
  close(): void {
    this.#closed = true;
    this.#closing.abort();
  }

  /** Stops every instance at once, each within its own drain and stop timeouts. Rollouts in progress end as failed. */
  async stopAll(reason = 'node stopping'): Promise<void> {
    this.close();
    const all = this.controllers();
    this.#byVersion.clear();
    await Promise.all(all.map((c) => c.stop(reason)));
  }
}

function remove(list: InstanceController[], item: InstanceController): void {
  const at = list.indexOf(item);
  if (at >= 0) list.splice(at, 1);
}

function describeLast(record: Readonly<InstanceRecord>): string {
  const check = record.lastCheck ? `, last check ${record.lastCheck.output}` : '';
  return ` (${record.status}${check}${record.reason ? `: ${record.reason}` : ''})`;
}
