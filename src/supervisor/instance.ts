import { randomBytes } from 'node:crypto';
import type { InstanceRecord, InstanceStatus } from '../catalog/types.js';
import type { Clock, Timer } from '../clock.js';
import { BerthError, isBerthError } from '../errors.js';
import { readSecret } from '../security/secret-ref.js';
import { createCheck, type ConnectOptions } from '../health/checks/index.js';
import { HealthMonitor } from '../health/monitor.js';
import type { VersionSpec } from '../manifest/types.js';
import type { Logger } from '../telemetry/logger.js';
import { Events } from '../telemetry/events.js';
import { Backoff } from './backoff.js';
import { InstanceProcess, type ExitStatus } from './process.js';
import type { PortAllocator } from './ports.js';
import type { Watchdog } from './watchdog.js';
import type { Isolator, PreparedInstance } from './isolation/isolator.js';
import type { UsageSampler } from './isolation/usage.js';
import { formatSize } from '../size.js';

/** Where instance records go: the catalog. */
export interface InstanceSink {
  put(record: InstanceRecord): Promise<void>;
}

/** Waits until an instance has no request in flight (the gateway implements it). */
export interface Drainer {
  waitIdle(instanceId: string, timeoutMs: number): Promise<void>;
}

export interface InstanceDeps {
  sink: InstanceSink;
  clock: Clock;
  logger: Logger;
  ports: PortAllocator;
  nodeName: string;
  host: string;
  watchdog?: Watchdog;
  drainer?: Drainer;
  random?: () => number;
  /** The node's admin API URL, given to instances as BERTH_ADMIN (berth/client finds discovery there); read at each start. */
  adminUrl?: () => string | undefined;
  /** The key that signs identity headers (base64url), given to instances as BERTH_IDENTITY_KEY so they can verify them. */
  identityKey?: () => string | undefined;
  /** TLS to the instances of a version whose service is reached over TLS (`tls:`): its checks use it too. One object per service. */
  checkTls?: (spec: VersionSpec) => ConnectOptions | undefined;
  /** Users, limits and sandboxes (docs/isolation.md); absent: instances are plain child processes. */
  isolator?: Pick<Isolator, 'prepare'>;
  /** Samples each running instance's CPU, memory, fds and processes. */
  usage?: Pick<UsageSampler, 'track' | 'untrack'>;
}

/** Variables passed through from Berth's own environment so commands resolve and locales work. */
const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

/** A record is rewritten when its check output is unchanged only this often. */
const CHECK_REFRESH_MS = 10_000;

export function newInstanceId(service: string, version: string): string {
  return `${service}-${version}-${randomBytes(4).toString('hex').slice(0, 5)}`;
}

/**
 * One instance: its process, restarts with backoff, health and catalog record.
 * The single writer of its record, so writes never race.
 */
export class InstanceController {
  readonly id: string;
  readonly spec: VersionSpec;
  readonly #deps: InstanceDeps;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  #record: InstanceRecord;
  #process: InstanceProcess | undefined;
  /** The isolation of the process running (its cgroup, released when it exits). */
  #isolated: PreparedInstance | undefined;
  #health: HealthMonitor | undefined;
  #restartTimer: Timer | undefined;
  #unstableRestarts = 0;
  #stopping: Promise<void> | undefined;
  /** Set when health asked for the restart, so a clean exit 0 on SIGTERM is still restarted. */
  #healthRestart = false;
  #lastWriteAt = 0;
  #writes: Promise<void> = Promise.resolve();
  readonly #statusListeners = new Set<(record: Readonly<InstanceRecord>) => void>();

  constructor(spec: VersionSpec, deps: InstanceDeps, id = newInstanceId(spec.service, spec.version)) {
    this.id = id;
    this.spec = spec;
    this.#deps = deps;
    this.#log = deps.logger.child({ group: spec.group, service: spec.service, version: spec.version, instance: id });
    this.#backoff = new Backoff({
      initialMs: spec.restart.backoffInitialMs,
      maxMs: spec.restart.backoffMaxMs,
      factor: spec.restart.backoffFactor,
      ...(deps.random ? { random: deps.random } : {}),
    });
    const now = new Date(deps.clock.now()).toISOString();
    this.#record = {
      id,
      node: deps.nodeName,
      group: spec.group,
      service: spec.service,
      version: spec.version,
      address: deps.host,
      port: 0,
      pid: null,
      status: 'starting',
      restarts: 0,
      source: 'supervised',
      createdAt: now,
      startedAt: null,
      updatedAt: now,
      lastCheck: null,
      lastExit: null,
      reason: null,
      weight: 1,
      registration: null,
    };
  }

  get record(): Readonly<InstanceRecord> {
    return this.#record;
  }

  get status(): InstanceStatus {
    return this.#record.status;
  }

  /**
   * Calls `listener` with a snapshot of the record at every status change
   * (`starting → passing`, `passing → draining`…). Returns the unsubscribe.
   */
  onStatus(listener: (record: Readonly<InstanceRecord>) => void): () => void {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /**
   * Resolves with the record once `pred` holds for it (now or at a later
   * status change) and that record has reached the sink, so whoever follows
   * the catalog (the gateway) has seen it too. Rejects with the signal's
   * reason when `signal` aborts first.
   */
  waitForStatus(pred: (record: Readonly<InstanceRecord>) => boolean, signal?: AbortSignal): Promise<InstanceRecord> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason as Error);
        return;
      }
      const settle = (record: Readonly<InstanceRecord>): void => {
        off();
        signal?.removeEventListener('abort', onAbort);
        void this.flush().then(() => resolve({ ...record }));
      };
      const onAbort = (): void => {
        off();
        reject(signal?.reason as Error);
      };
      const off = this.onStatus((record) => {
        if (pred(record)) settle(record);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (pred(this.#record)) settle({ ...this.#record });
    });
  }

  /** Starts the first process; a spawn failure is handled like a crash (restart with backoff). */
  async start(): Promise<void> {
    await this.#spawn();
  }

  /**
   * Graceful stop: draining (no new requests) → wait for in-flight ones up to
   * drainTimeout → stop signal to the process group → SIGKILL after stopTimeout.
   */
  stop(reason = 'stopped by node'): Promise<void> {
    this.#stopping ??= this.#stop(reason);
    return this.#stopping;
  }

  async #stop(reason: string): Promise<void> {
    if (this.#restartTimer) this.#deps.clock.clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const proc = this.#process;
    if (proc) {
      this.#update({ status: 'draining', reason });
      this.#log.info({ event: Events.instanceDraining, reason }, 'draining');
      await this.#deps.drainer?.waitIdle(this.id, this.spec.stop.drainTimeoutMs);
      await this.#health?.stop();
      const exit = await proc.stop(this.spec.stop.signal, this.spec.stop.stopTimeoutMs);
      this.#deps.watchdog?.unwatch(proc.pid);
      this.#deps.usage?.untrack(this.id);
      this.#process = undefined;
      await this.#releaseIsolation();
      this.#update({ status: 'stopped', pid: null, startedAt: null, lastExit: this.#exitInfo(exit), reason });
      this.#log.info({ event: Events.instanceStopped, code: exit.code, signal: exit.signal }, 'stopped');
    } else if (this.#record.status !== 'failed') {
      this.#update({ status: 'stopped', reason });
    }
    await this.flush();
  }

  /** Resolves when every record written so far has reached the sink. */
  flush(): Promise<void> {
    return this.#writes;
  }

  async #spawn(): Promise<void> {
    if (this.#stopping) return;
    const spec = this.spec;
    let proc: InstanceProcess;
    let isolated: PreparedInstance | undefined;
    try {
      const port = await this.#deps.ports.allocate(this.#record.port || undefined);
      const env = { ...this.#environment(port), ...(await this.#secrets()) };
      isolated = await this.#deps.isolator?.prepare(this.id, spec);
      proc = await InstanceProcess.spawn({
        command: isolated?.command ?? spec.command,
        cwd: spec.cwd,
        env,
        onLine: (stream, line) => {
          if (stream === 'stderr') this.#log.warn({ event: Events.instanceOutput, stream }, line);
          else this.#log.info({ event: Events.instanceOutput, stream }, line);
        },
      });
      this.#record.port = port;
    } catch (err) {
      await isolated?.release();
      const message = isBerthError(err) ? err.message : String(err);
      this.#log.error({ event: Events.instanceSpawnFailed, err: message }, 'cannot start instance');
      // A user, limit or sandbox this machine cannot give will not appear by retrying.
      if (isBerthError(err, 'BERTH_ERR_ISOLATION')) this.#update({ status: 'failed', reason: `cannot start: ${message}` });
      else this.#scheduleRestart(`cannot start: ${message}`, 0);
      return;
    }
    if (this.#stopping) {
      await proc.stop('SIGKILL', 0);
      await isolated?.release();
      return;
    }
    this.#process = proc;
    this.#isolated = isolated;
    this.#deps.watchdog?.watch(proc.pid);
    this.#deps.usage?.track(this.id, proc.pid, { ...(isolated?.cgroupDir !== undefined ? { cgroup: isolated.cgroupDir } : {}), limits: isolated?.limits ?? spec.isolation.resources });
    const check = createCheck(spec.health.check, this.#deps.checkTls?.(spec));
    this.#update({
      pid: proc.pid,
      startedAt: new Date(this.#deps.clock.now()).toISOString(),
      // Without a check there is nothing to pass: the operator declared the process alive is enough.
      status: check ? 'starting' : 'passing',
      reason: null,
    });
    this.#log.info({ event: Events.instanceStarted, pid: proc.pid, port: this.#record.port, command: spec.command.line }, 'started');
    void proc.exited.then((exit) => this.#onExit(proc, exit));
    if (check) {
      this.#health = new HealthMonitor({
        check,
        spec: spec.health,
        target: { host: this.#deps.host, port: this.#record.port, cwd: spec.cwd, env: this.#environment(this.#record.port) },
        clock: this.#deps.clock,
        onResult: (result, status) => {
          if (this.#process !== proc || this.#stopping) return;
          const changed = status !== this.#record.status || result.output !== this.#record.lastCheck?.output;
          this.#record.lastCheck = result;
          if (changed || this.#deps.clock.now() - this.#lastWriteAt >= CHECK_REFRESH_MS) {
            if (status !== this.#record.status) {
              this.#log.info({ event: Events.instanceStatus, from: this.#record.status, to: status, check: result.output }, `${status}`);
            }
            this.#update({ status });
          }
        },
        onRestartDue: () => this.#onHealthRestart(proc),
      });
      this.#health.start();
    }
  }

  /**
   * The variables given as secrets by reference, read at each start (a
   * rotated file is picked up by the next restart). Their values go to the
   * process's environment only: never to the spec, the catalog, a log line or
   * the admin API.
   */
  async #secrets(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const [name, ref] of Object.entries(this.spec.secretEnv)) {
      try {
        out[name] = (await readSecret(ref)).toString('utf8');
      } catch (err) {
        throw new BerthError('BERTH_ERR_SPAWN', `env ${name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    return out;
  }

  #environment(port: number): Record<string, string> {
    const env: Record<string, string> = {};
    const admin = this.#deps.adminUrl?.();
    const identityKey = this.#deps.identityKey?.();
    for (const name of INHERITED_ENV) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    return {
      ...env,
      ...this.spec.env,
      PORT: String(port),
      BERTH_GROUP: this.spec.group,
      BERTH_SERVICE: this.spec.service,
      BERTH_VERSION: this.spec.version,
      BERTH_INSTANCE: this.id,
      BERTH_NODE: this.#deps.nodeName,
      ...(admin !== undefined ? { BERTH_ADMIN: admin } : {}),
      ...(identityKey !== undefined ? { BERTH_IDENTITY_KEY: identityKey } : {}),
    };
  }

  #onHealthRestart(proc: InstanceProcess): void {
    if (this.#process !== proc || this.#stopping) return;
    if (this.spec.restart.policy === 'never') {
      this.#log.warn({ event: Events.instanceStatus }, 'critical, not restarted (restart: never)');
      return;
    }
    const seconds = Math.round(this.spec.health.restartAfterMs / 1000);
    this.#log.warn({ event: Events.instanceRestarting, cause: 'health' }, `critical for ${seconds}s: restarting`);
    this.#healthRestart = true;
    void this.#health?.stop();
    void proc.stop(this.spec.stop.signal, this.spec.stop.stopTimeoutMs);
  }

  #onExit(proc: InstanceProcess, exit: ExitStatus): void {
    if (this.#process !== proc) return;
    // Exit is noticed at once (not at the next check): leave rotation before anything else.
    this.#process = undefined;
    void this.#health?.stop();
    this.#health = undefined;
    proc.signal('SIGKILL');
    this.#deps.watchdog?.unwatch(proc.pid);
    this.#deps.usage?.untrack(this.id);
    if (this.#stopping) return;

    const startedAt = this.#record.startedAt ? Date.parse(this.#record.startedAt) : this.#deps.clock.now();
    const uptime = this.#deps.clock.now() - startedAt;
    const how = exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`;
    const lastExit = this.#exitInfo(exit);
    const healthRestart = this.#healthRestart;
    this.#healthRestart = false;
    const clean = exit.code === 0 && exit.signal === null;
    const policy = this.spec.restart.policy;
    const final = !healthRestart && (policy === 'never' || (policy === 'on-failure' && clean));
    // The record changes first (the gateway drops the instance on it), then the log line says so.
    if (final) this.#update({ status: clean ? 'stopped' : 'failed', pid: null, startedAt: null, lastExit, reason: `${how} (restart: ${policy})` });
    else this.#update({ status: 'critical', pid: null, startedAt: null, lastExit, reason: how });
    this.#log.warn({ event: Events.instanceExited, code: exit.code, signal: exit.signal, uptimeMs: uptime }, how);
    if (!this.#isolated) {
      if (!final) this.#scheduleRestart(healthRestart ? 'health check critical' : how, uptime);
      return;
    }
    // Whether the kernel killed it for its memory limit is in its cgroup: read before the group goes, then say so.
    void this.#oomKilled().then((oom) => {
      if (this.#stopping) return;
      const why = oom ? this.#reportOom(exit) : healthRestart ? 'health check critical' : how;
      if (!final) this.#scheduleRestart(why, uptime);
    });
  }

  /** Whether the process that just exited was OOM-killed; its cgroup is released either way. */
  async #oomKilled(): Promise<boolean> {
    const isolated = this.#isolated;
    if (!isolated) return false;
    const kills = await isolated.oomKills().catch(() => 0);
    await this.#releaseIsolation();
    return kills > 0;
  }

  #reportOom(exit: ExitStatus): string {
    const limit = this.spec.isolation.resources.memoryBytes;
    const reason = `oom-killed (memory limit ${limit === null ? 'unknown' : formatSize(limit)})`;
    this.#update({ reason, lastExit: { ...this.#exitInfo(exit), oomKilled: true } });
    this.#log.warn({ event: Events.instanceOomKilled, memoryLimit: limit }, reason);
    return reason;
  }

  /** Kills what is left of the instance's cgroup and removes it. */
  async #releaseIsolation(): Promise<void> {
    const isolated = this.#isolated;
    this.#isolated = undefined;
    await isolated?.release().catch((err: unknown) => this.#log.error({ err }, 'cannot release the instance\'s cgroup'));
  }

  #scheduleRestart(why: string, uptime: number): void {
    const restart = this.spec.restart;
    if (uptime >= restart.stableAfterMs) {
      this.#backoff.reset();
      this.#unstableRestarts = 0;
    }
    this.#unstableRestarts++;
    if (this.#unstableRestarts > restart.maxRestarts) {
      const reason = `crash loop: ${restart.maxRestarts} restarts in a row, each up less than ${Math.round(restart.stableAfterMs / 1000)}s; last: ${why}`;
      this.#update({ status: 'failed', reason });
      this.#log.error({ event: Events.instanceFailed, restarts: this.#record.restarts }, reason);
      return;
    }
    const delayMs = this.#backoff.next();
    this.#update({ status: 'critical', reason: `${why}; restarting in ${delayMs}ms` });
    this.#log.info({ event: Events.instanceRestarting, delayMs, attempt: this.#unstableRestarts }, `restarting in ${delayMs}ms`);
    this.#restartTimer = this.#deps.clock.setTimeout(() => {
      this.#restartTimer = undefined;
      this.#record.restarts++;
      void this.#spawn();
    }, delayMs);
  }

  #exitInfo(exit: ExitStatus): NonNullable<InstanceRecord['lastExit']> {
    return { code: exit.code, signal: exit.signal, at: new Date(this.#deps.clock.now()).toISOString() };
  }

  #update(patch: Partial<InstanceRecord>): void {
    const now = this.#deps.clock.now();
    const before = this.#record.status;
    Object.assign(this.#record, patch, { updatedAt: new Date(now).toISOString() });
    this.#lastWriteAt = now;
    const snapshot = { ...this.#record };
    this.#writes = this.#writes
      .then(() => this.#deps.sink.put(snapshot))
      .catch((err: unknown) => this.#log.error({ err }, 'cannot write instance record to the catalog'));
    if (snapshot.status === before) return;
    for (const listener of [...this.#statusListeners]) {
      try {
        listener(snapshot);
      } catch (err) {
        this.#log.error({ err }, 'a status listener threw');
      }
    }
  }
}
