import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { Catalog, CatalogChange } from '../catalog/catalog.js';
import type { CheckResult, InstanceRecord, InstanceStatus, RegistrationInfo } from '../catalog/types.js';
import type { Clock, Timer } from '../clock.js';
import { formatDuration, parseDuration } from '../duration.js';
import { BerthError, type ErrorDetail } from '../errors.js';
import { HttpCheck } from '../health/checks/http.js';
import { HealthMonitor } from '../health/monitor.js';
import type { HealthStatus } from '../health/state.js';
import { NAME, NAME_EXPECTED } from '../manifest/schema.js';
import { isSemver } from '../manifest/semver.js';
import { Events } from '../telemetry/events.js';
import type { Logger } from '../telemetry/logger.js';

/**
 * Log events of external registrations. Status changes use `instance.status`,
 * like supervised instances, so one query follows every instance.
 * TODO(lead): move these two into src/telemetry/events.ts (not this file's owner).
 */
export const RegistrationEvents = {
  registered: 'registration.registered',
  deregistered: 'registration.deregistered',
} as const;

/** What a service sends to register itself (the admin API's `POST /v1/registrations` body). */
export interface RegistrationInput {
  /** Default `<service>-<version>-ext-<5 hex>`. Registering an id again updates it. */
  id?: string;
  group: string;
  service: string;
  /** Strict semver; default `0.0.0`. */
  version?: string;
  /** IPv4 or IPv6 literal, or a host name. */
  address: string;
  port: number;
  /** Default 1. */
  weight?: number;
  tags?: string[];
  /** TTL heartbeat: a duration (`10s`) or milliseconds. Exactly one of `ttl` and `check`. */
  ttl?: string | number;
  /** Active HTTP check on `address:port`. Exactly one of `ttl` and `check`. */
  check?: { http: string; interval?: string | number; timeout?: string | number };
  /** Removed from the catalog after being critical this long; default `1m`. */
  deregisterAfter?: string | number;
}

export type HeartbeatStatus = 'passing' | 'warning' | 'critical';

/** A registration after validation: every default applied, every duration in milliseconds. */
export interface RegistrationSpec {
  id: string | undefined;
  group: string;
  service: string;
  version: string;
  address: string;
  port: number;
  weight: number;
  tags: string[];
  ttlMs: number | null;
  http: { path: string; intervalMs: number; timeoutMs: number } | null;
  deregisterAfterMs: number;
}

/** The part of the catalog registrations use. */
export type RegistrationCatalog = Pick<Catalog, 'get' | 'list' | 'put' | 'remove' | 'subscribe'>;

export interface RegistrationsDeps {
  catalog: RegistrationCatalog;
  clock: Clock;
  logger: Logger;
  nodeName: string;
}

export const REGISTRATION_DEFAULTS = {
  version: '0.0.0',
  weight: 1,
  deregisterAfterMs: 60_000,
  intervalMs: 10_000,
  timeoutMs: 2_000,
} as const;

/*
 * Bounds keep every duration inside what a timer can hold (setTimeout
 * overflows past 24.8 days and fires at once) and refuse values that can only
 * be mistakes: a sub-second TTL would be a heartbeat storm.
 */
const LIMITS = {
  ttlMs: { min: 1_000, max: 86_400_000 },
  intervalMs: { min: 100, max: 86_400_000 },
  timeoutMs: { min: 10, max: 3_600_000 },
  deregisterAfterMs: { min: 1_000, max: 7 * 86_400_000 },
  tags: 64,
  tagLength: 128,
} as const;

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const CHECK_PATH = /^\/[^\s#]*$/;

/** A record is rewritten when its check output is unchanged only this often (as for supervised instances). */
const CHECK_REFRESH_MS = 10_000;

/**
 * Checks a registration and applies its defaults. Problems name the field
 * (`port`, `check.interval`); the admin API prefixes them with `body.`.
 */
export function validateRegistration(input: RegistrationInput): { spec: RegistrationSpec | undefined; problems: ErrorDetail[] } {
  const problems: ErrorDetail[] = [];
  const problem = (where: string, message: string): void => {
    problems.push({ where, message });
  };

  if (input.id !== undefined && !ID.test(input.id)) problem('id', 'must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit');
  if (!NAME.test(input.group)) problem('group', `must be ${NAME_EXPECTED}`);
  if (!NAME.test(input.service)) problem('service', `must be ${NAME_EXPECTED}`);
  const version = input.version ?? REGISTRATION_DEFAULTS.version;
  if (!isSemver(version)) problem('version', `must be a strict semver version like 1.2.3 (no "v", no build metadata), got ${JSON.stringify(version)}`);
  const address = normalizeAddress(input.address);
  if (address === undefined) problem('address', `must be an IPv4 or IPv6 address or a host name, got ${JSON.stringify(input.address)}`);
  if (!Number.isInteger(input.port) || input.port < 1 || input.port > 65_535) problem('port', 'must be an integer from 1 to 65535');
  const weight = input.weight ?? REGISTRATION_DEFAULTS.weight;
  if (!Number.isFinite(weight) || weight < 0) problem('weight', 'must be a number >= 0');
  const tags = input.tags ?? [];
  if (tags.length > LIMITS.tags) problem('tags', `must hold at most ${LIMITS.tags} tags`);
  tags.forEach((tag, i) => {
    if (tag.length === 0 || tag.length > LIMITS.tagLength) problem(`tags.${i}`, `must be 1-${LIMITS.tagLength} characters`);
  });

  let ttlMs: number | null = null;
  let http: RegistrationSpec['http'] = null;
  if ((input.ttl === undefined) === (input.check === undefined)) {
    problem(input.ttl === undefined ? '' : 'check', 'exactly one of ttl (heartbeats) and check (HTTP) is required');
  } else if (input.ttl !== undefined) {
    ttlMs = duration(input.ttl, 'ttl', LIMITS.ttlMs, problem) ?? null;
  } else if (input.check !== undefined) {
    const { check } = input;
    if (!CHECK_PATH.test(check.http)) problem('check.http', `must be a URL path starting with "/", got ${JSON.stringify(check.http)}`);
    const intervalMs = check.interval === undefined ? REGISTRATION_DEFAULTS.intervalMs : duration(check.interval, 'check.interval', LIMITS.intervalMs, problem);
    // Like the manifest: a check may not outlive its interval, so a short interval brings the default timeout down.
    const timeoutMs =
      check.timeout === undefined ? Math.min(REGISTRATION_DEFAULTS.timeoutMs, intervalMs ?? Infinity) : duration(check.timeout, 'check.timeout', LIMITS.timeoutMs, problem);
    if (intervalMs !== undefined && timeoutMs !== undefined) http = { path: check.http, intervalMs, timeoutMs };
  }
  const deregisterAfterMs =
    input.deregisterAfter === undefined ? REGISTRATION_DEFAULTS.deregisterAfterMs : duration(input.deregisterAfter, 'deregisterAfter', LIMITS.deregisterAfterMs, problem);

  if (problems.length > 0 || address === undefined || deregisterAfterMs === undefined) return { spec: undefined, problems };
  return {
    spec: { id: input.id, group: input.group, service: input.service, version, address, port: input.port, weight, tags: [...tags], ttlMs, http, deregisterAfterMs },
    problems,
  };
}

function duration(
  value: string | number,
  where: string,
  limits: { min: number; max: number },
  problem: (where: string, message: string) => void,
): number | undefined {
  const ms = parseDuration(value);
  if (ms === undefined) {
    problem(where, `must be a duration like 500ms, 10s, 1m (or milliseconds), got ${JSON.stringify(value)}`);
    return undefined;
  }
  if (ms < limits.min || ms > limits.max) {
    problem(where, `must be from ${formatDuration(limits.min)} to ${formatDuration(limits.max)}, got ${formatDuration(ms)}`);
    return undefined;
  }
  return ms;
}

/** The address as checks and clients use it: IPv6 without brackets; undefined when it is neither an IP nor a host name. */
function normalizeAddress(text: string): string | undefined {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (isIP(bare) !== 0) return bare;
  if (bare !== text) return undefined;
  // Dotted digits that are not an IPv4 address (`300.1.1.1`) are a typo, not a host name.
  if (/^[\d.]+$/.test(text)) return undefined;
  return HOSTNAME.test(text) ? text : undefined;
}

export function newExternalId(service: string, version: string): string {
  return `${service}-${version}-ext-${randomBytes(3).toString('hex').slice(0, 5)}`;
}

interface Entry {
  readonly id: string;
  /** The record as this node last wrote it; the one writer of an external record is the node tracking it. */
  record: InstanceRecord;
  log: Logger;
  ttlTimer: Timer | undefined;
  deregisterTimer: Timer | undefined;
  monitor: HealthMonitor | undefined;
  lastWriteAt: number;
  /** Set once the record is deregistered (or deleted from the catalog by someone else): later events are dropped. */
  removed: boolean;
}

/**
 * External registrations (Consul's agent service registration): services
 * Berth does not run register an address and prove they are alive, either by
 * TTL heartbeats or by an HTTP check Berth runs. An external instance is
 * `starting` until its first heartbeat or first passing check, `critical` when
 * its TTL expires or its check fails, and removed from the catalog once it has
 * been critical for `deregisterAfter` (Consul's DeregisterCriticalServiceAfter).
 *
 * Each record is written only by the node tracking it, through one ordered
 * queue per record, so a heartbeat and an expiry cannot overtake each other.
 */
export class Registrations {
  readonly #deps: RegistrationsDeps;
  readonly #entries = new Map<string, Entry>();
  /**
   * The last catalog write queued per id, kept across re-registrations and
   * removals of that id so that a delete cannot land after the put of a
   * newer registration (or the reverse). Never rejects.
   */
  readonly #queues = new Map<string, Promise<void>>();
  /** Monitors being stopped (a re-registration replaced them); `close()` waits for their checks to settle. */
  readonly #settling = new Set<Promise<void>>();
  #unsubscribe: (() => void) | undefined;
  #started = false;
  #closed = false;

  constructor(deps: RegistrationsDeps) {
    this.#deps = deps;
  }

  /**
   * Resumes tracking every external record of this node found in the catalog
   * (after a node restart): TTLs count again from now, HTTP checks restart,
   * and a critical record's deregistration delay starts over. Idempotent.
   */
  start(): void {
    this.#assertOpen();
    if (this.#started) return;
    this.#started = true;
    this.#unsubscribe = this.#deps.catalog.subscribe((change) => this.#onCatalogChange(change));
    for (const record of this.#deps.catalog.list({ node: this.#deps.nodeName })) {
      if (record.source !== 'external' || this.#entries.has(record.id)) continue;
      if (record.registration === null) {
        this.#deps.logger.warn({ instance: record.id }, 'external instance without registration details: not tracked');
        continue;
      }
      const entry = this.#track(structuredClone(record));
      entry.log.info({ event: RegistrationEvents.registered, resumed: true, status: record.status }, 'registration resumed');
      this.#arm(entry);
      if (entry.record.status === 'critical') this.#armDeregister(entry);
    }
  }

  /** Ids this node tracks. */
  ids(): string[] {
    return [...this.#entries.keys()];
  }

  /**
   * Registers an external instance, or updates it when its id is known. An
   * update that changes only `weight` or `tags` keeps the instance's status;
   * any other change makes it a new registration, `starting` again.
   * Rejects with BERTH_ERR_BAD_REQUEST (details per field) or, when the id is a
   * supervised instance's, BERTH_ERR_REGISTRATION_CONFLICT.
   */
  async register(input: RegistrationInput): Promise<InstanceRecord> {
    this.#assertOpen();
    const { spec, problems } = validateRegistration(input);
    if (spec === undefined) {
      throw new BerthError('BERTH_ERR_BAD_REQUEST', `registration of ${JSON.stringify(input.service)} is invalid`, { details: problems });
    }
    const id = spec.id ?? newExternalId(spec.service, spec.version);
    const existing = this.#deps.catalog.get(id);
    if (existing?.source === 'supervised') {
      throw new BerthError('BERTH_ERR_REGISTRATION_CONFLICT', `instance "${id}" is run by node "${existing.node}", not registered: choose another id`);
    }

    const now = this.#deps.clock.now();
    const at = new Date(now).toISOString();
    const registration: RegistrationInfo = {
      ttlMs: spec.ttlMs,
      http: spec.http,
      deregisterAfterMs: spec.deregisterAfterMs,
      lastHeartbeat: null,
      tags: spec.tags,
    };
    const fields = {
      node: this.#deps.nodeName,
      group: spec.group,
      service: spec.service,
      version: spec.version,
      address: spec.address,
      port: spec.port,
      weight: spec.weight,
    };

    const entry = this.#entries.get(id);
    if (entry !== undefined && sameRegistration(entry.record, fields, registration)) {
      // Only weight or tags changed (or nothing): an idempotent re-registration keeps status and timers.
      entry.record.weight = spec.weight;
      entry.record.registration = { ...(entry.record.registration as RegistrationInfo), tags: spec.tags };
      await this.#write(entry);
      return this.#current(entry);
    }

    if (entry !== undefined) this.#untrack(entry);
    const record: InstanceRecord = {
      id,
      ...fields,
      pid: null,
      status: 'starting',
      restarts: 0,
      source: 'external',
      createdAt: existing?.createdAt ?? at,
      startedAt: at,
      updatedAt: at,
      lastCheck: null,
      lastExit: null,
      reason: spec.ttlMs !== null ? 'waiting for the first heartbeat' : 'waiting for the first check',
      weight: spec.weight,
      registration,
    };
    const fresh = this.#track(record);
    fresh.log.info(
      {
        event: RegistrationEvents.registered,
        address: spec.address,
        port: spec.port,
        ttlMs: spec.ttlMs,
        http: spec.http?.path ?? null,
        deregisterAfterMs: spec.deregisterAfterMs,
        updated: entry !== undefined || existing !== undefined,
      },
      'registered',
    );
    this.#arm(fresh);
    await this.#write(fresh);
    return this.#current(fresh);
  }

  /**
   * Records a heartbeat of a TTL registration: sets its status (default
   * `passing`) and restarts its TTL. Rejects with BERTH_ERR_NOT_FOUND for an
   * unknown id and BERTH_ERR_REGISTRATION_CONFLICT for a supervised instance or
   * a registration checked over HTTP.
   */
  async heartbeat(id: string, status: HeartbeatStatus = 'passing', output?: string): Promise<InstanceRecord> {
    this.#assertOpen();
    const entry = this.#entryOf(id, 'heartbeat');
    const registration = entry.record.registration as RegistrationInfo;
    if (registration.ttlMs === null) {
      throw new BerthError('BERTH_ERR_REGISTRATION_CONFLICT', `registration "${id}" is checked over HTTP (${registration.http?.path ?? ''}); it takes no heartbeats`);
    }
    const now = this.#deps.clock.now();
    const at = new Date(now).toISOString();
    const text = output ?? `heartbeat: ${status}`;
    entry.record.registration = { ...registration, lastHeartbeat: at };
    this.#setStatus(entry, status, {
      lastCheck: { status, output: text, at, durationMs: 0 },
      reason: status === 'passing' ? null : `heartbeat reported ${status}${output ? `: ${output}` : ''}`,
    });
    this.#armTtl(entry, registration.ttlMs);
    await this.#write(entry);
    return this.#current(entry);
  }

  /** Removes an external instance from the catalog. Rejects like `heartbeat` for unknown or supervised ids. */
  async deregister(id: string): Promise<void> {
    this.#assertOpen();
    const entry = this.#entries.get(id);
    if (entry === undefined) {
      const record = this.#deps.catalog.get(id);
      if (record === undefined) throw notFound(id);
      if (record.source === 'supervised') throw supervisedConflict(record, 'deregistered');
      // Another node's registration: the catalog is shared, so removing it here is removing it.
      const log = this.#deps.logger.child({ instance: id });
      log.info({ event: RegistrationEvents.deregistered, cause: 'request', owner: record.node }, 'deregistered');
      await this.#enqueue(id, log, () => this.#deps.catalog.remove(id));
      return;
    }
    entry.log.info({ event: RegistrationEvents.deregistered, cause: 'request' }, 'deregistered');
    await this.#remove(entry);
  }

  /** Resolves once every write queued so far has reached the catalog and every stopped check has settled. */
  async settled(): Promise<void> {
    await Promise.all([...this.#queues.values(), ...this.#settling]);
  }

  /** Stops every timer and check and waits for writes in flight. Records stay in the catalog for `start()` to resume. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    const stopping = entries.map((entry) => {
      this.#clearTimers(entry);
      return entry.monitor?.stop();
    });
    await Promise.all([...stopping, ...this.#settling, ...this.#queues.values()]);
  }

  #track(record: InstanceRecord): Entry {
    const entry: Entry = {
      id: record.id,
      record,
      log: this.#deps.logger.child({ group: record.group, service: record.service, version: record.version, instance: record.id }),
      ttlTimer: undefined,
      deregisterTimer: undefined,
      monitor: undefined,
      lastWriteAt: this.#deps.clock.now(),
      removed: false,
    };
    this.#entries.set(record.id, entry);
    return entry;
  }

  /** Stops tracking without touching the catalog. */
  #untrack(entry: Entry): void {
    entry.removed = true;
    this.#clearTimers(entry);
    const monitor = entry.monitor;
    entry.monitor = undefined;
    if (monitor !== undefined) {
      const stopped = monitor.stop();
      this.#settling.add(stopped);
      void stopped.finally(() => this.#settling.delete(stopped));
    }
    if (this.#entries.get(entry.id) === entry) this.#entries.delete(entry.id);
  }

  #remove(entry: Entry): Promise<void> {
    this.#untrack(entry);
    return this.#enqueue(entry.id, entry.log, () => this.#deps.catalog.remove(entry.id));
  }

  /** Starts what proves the instance alive: the TTL timer, or the HTTP check. */
  #arm(entry: Entry): void {
    const registration = entry.record.registration as RegistrationInfo;
    if (registration.ttlMs !== null) {
      if (entry.record.status !== 'critical') this.#armTtl(entry, registration.ttlMs);
    } else if (registration.http !== null) {
      entry.monitor = this.#startMonitor(entry, registration.http, registration.deregisterAfterMs);
    }
  }

  #armTtl(entry: Entry, ttlMs: number): void {
    const { clock } = this.#deps;
    if (entry.ttlTimer !== undefined) clock.clearTimeout(entry.ttlTimer);
    entry.ttlTimer = clock.setTimeout(() => {
      entry.ttlTimer = undefined;
      if (entry.removed) return;
      const output = `TTL expired: no heartbeat for ${formatDuration(ttlMs)}`;
      this.#setStatus(entry, 'critical', {
        lastCheck: { status: 'critical', output, at: new Date(clock.now()).toISOString(), durationMs: 0 },
        reason: output,
      });
      void this.#write(entry).catch(() => undefined);
    }, ttlMs);
  }

  #startMonitor(entry: Entry, http: NonNullable<RegistrationInfo['http']>, deregisterAfterMs: number): HealthMonitor {
    const monitor: HealthMonitor = new HealthMonitor({
      check: new HttpCheck({ kind: 'http', path: http.path, method: 'GET', headers: {} }),
      // One result decides, both ways (Consul's default): there is no process start to be lenient about.
      spec: {
        check: { kind: 'http', path: http.path, method: 'GET', headers: {} },
        intervalMs: http.intervalMs,
        timeoutMs: http.timeoutMs,
        healthyThreshold: 1,
        unhealthyThreshold: 1,
        startPeriodMs: 0,
        restartAfterMs: deregisterAfterMs,
      },
      target: { host: entry.record.address, port: entry.record.port, cwd: '/', env: {} },
      clock: this.#deps.clock,
      onResult: (result, status) => {
        if (entry.removed || entry.monitor !== monitor) return;
        this.#onCheckResult(entry, result, status);
      },
      // Deregistration follows the record's status (one path for TTL and HTTP registrations), not the monitor's restart signal.
      onRestartDue: () => undefined,
      onError: (err) => entry.log.error({ err }, 'registration check callback failed'),
    });
    monitor.start();
    return monitor;
  }

  #onCheckResult(entry: Entry, result: CheckResult, status: HealthStatus): void {
    const { record } = entry;
    const changed = status !== record.status || result.output !== record.lastCheck?.output;
    if (!changed && this.#deps.clock.now() - entry.lastWriteAt < CHECK_REFRESH_MS) {
      record.lastCheck = result;
      return;
    }
    this.#setStatus(entry, status, {
      lastCheck: result,
      reason: status === 'passing' || status === 'starting' ? null : `check ${status}: ${result.output}`,
    });
    void this.#write(entry).catch(() => undefined);
  }

  /** Applies a status and the fields that come with it; logs a change and (dis)arms deregistration. */
  #setStatus(entry: Entry, status: InstanceStatus, fields: Pick<InstanceRecord, 'lastCheck' | 'reason'>): void {
    const from = entry.record.status;
    Object.assign(entry.record, fields, { status });
    if (status === from) return;
    entry.log.info({ event: Events.instanceStatus, from, to: status, check: fields.lastCheck?.output ?? null }, status);
    if (status === 'critical') this.#armDeregister(entry);
    else this.#clearDeregister(entry);
  }

  #armDeregister(entry: Entry): void {
    const { clock } = this.#deps;
    this.#clearDeregister(entry);
    const afterMs = (entry.record.registration as RegistrationInfo).deregisterAfterMs;
    entry.deregisterTimer = clock.setTimeout(() => {
      entry.deregisterTimer = undefined;
      if (entry.removed) return;
      entry.log.warn({ event: RegistrationEvents.deregistered, cause: 'critical', criticalForMs: afterMs }, `critical for ${formatDuration(afterMs)}: deregistered`);
      this.#remove(entry).catch((err: unknown) => entry.log.error({ err }, 'cannot remove a registration from the catalog'));
    }, afterMs);
  }

  #clearDeregister(entry: Entry): void {
    if (entry.deregisterTimer !== undefined) this.#deps.clock.clearTimeout(entry.deregisterTimer);
    entry.deregisterTimer = undefined;
  }

  #clearTimers(entry: Entry): void {
    this.#clearDeregister(entry);
    if (entry.ttlTimer !== undefined) this.#deps.clock.clearTimeout(entry.ttlTimer);
    entry.ttlTimer = undefined;
  }

  /** Queues a write of the record as it is now; resolves (or rejects) when that write is done. */
  #write(entry: Entry): Promise<void> {
    const now = this.#deps.clock.now();
    entry.record.updatedAt = new Date(now).toISOString();
    entry.lastWriteAt = now;
    const snapshot = structuredClone(entry.record);
    // A write queued before a removal or a newer registration of the id is dropped, not written back.
    return this.#enqueue(entry.id, entry.log, () => (entry.removed ? undefined : this.#deps.catalog.put(snapshot)));
  }

  #enqueue(id: string, log: Logger, op: () => Promise<void> | undefined): Promise<void> {
    const done = (this.#queues.get(id) ?? Promise.resolve()).then(op);
    const tail = done.catch((err: unknown) => log.error({ err }, 'cannot write a registration to the catalog'));
    this.#queues.set(id, tail);
    void tail.then(() => {
      if (this.#queues.get(id) === tail) this.#queues.delete(id);
    });
    return done;
  }

  #current(entry: Entry): InstanceRecord {
    return this.#deps.catalog.get(entry.id) ?? structuredClone(entry.record);
  }

  #entryOf(id: string, action: string): Entry {
    const entry = this.#entries.get(id);
    if (entry !== undefined) return entry;
    const record = this.#deps.catalog.get(id);
    if (record === undefined) throw notFound(id);
    if (record.source === 'supervised') throw supervisedConflict(record, `sent a ${action}`);
    throw new BerthError('BERTH_ERR_REGISTRATION_CONFLICT', `registration "${id}" is tracked by node "${record.node}": send its ${action} there`);
  }

  /** Someone else deleted a record this node tracks: stop tracking rather than write it back. */
  #onCatalogChange(change: CatalogChange): void {
    if (change.type !== 'delete') return;
    const entry = this.#entries.get(change.id);
    if (entry === undefined) return;
    entry.log.info({ event: RegistrationEvents.deregistered, cause: 'catalog' }, 'removed from the catalog: no longer tracked');
    this.#untrack(entry);
  }

  #assertOpen(): void {
    if (this.#closed) throw new BerthError('BERTH_ERR_CATALOG_CLOSED', 'registrations are closed: the node is stopping');
  }
}

function sameRegistration(record: InstanceRecord, fields: Pick<InstanceRecord, 'node' | 'group' | 'service' | 'version' | 'address' | 'port'>, registration: RegistrationInfo): boolean {
  const current = record.registration;
  return (
    current !== null &&
    record.node === fields.node &&
    record.group === fields.group &&
    record.service === fields.service &&
    record.version === fields.version &&
    record.address === fields.address &&
    record.port === fields.port &&
    current.ttlMs === registration.ttlMs &&
    current.deregisterAfterMs === registration.deregisterAfterMs &&
    JSON.stringify(current.http) === JSON.stringify(registration.http)
  );
}

function notFound(id: string): BerthError {
  return new BerthError('BERTH_ERR_NOT_FOUND', `no registration with id "${id}"`);
}

function supervisedConflict(record: InstanceRecord, action: string): BerthError {
  return new BerthError(
    'BERTH_ERR_REGISTRATION_CONFLICT',
    `instance "${record.id}" is run by node "${record.node}" (supervised), not registered: it cannot be ${action} through registrations`,
  );
}
