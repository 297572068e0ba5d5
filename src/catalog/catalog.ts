import semver from 'semver';
/**
 * The catalog: the observed state of every instance, kept in a Store under
 * `instances/<id>` and mirrored into an in-memory snapshot by one list + watch.
 * Readers (the gateway on every request, the admin API) read the snapshot and
 * never touch the store; writers (the supervisor, registrations) write through
 * the store and see their write in the snapshot when their call resolves.
 */
import { z } from 'zod';
import { BerthError, isBerthError } from '../errors.js';
import type { Store, Unwatch, WatchEvent } from './store.js';
import type { InstanceRecord, InstanceStatus } from './types.js';
import { INSTANCE_STATUSES } from './types.js';

/** Keys of instance records: `instances/<id>`. */
export const INSTANCE_PREFIX = 'instances/';

export interface CatalogOptions {
  /** A stored record that is not a valid InstanceRecord; it is left out of the snapshot. Default: a process warning. */
  onInvalid?: (key: string, err: Error) => void;
  /** A subscriber that threw. Default: a process warning. */
  onListenerError?: (err: unknown) => void;
}

export interface CatalogFilter {
  service?: string;
  group?: string;
  node?: string;
  statuses?: readonly InstanceStatus[];
}

export interface CatalogChange {
  type: 'put' | 'delete';
  id: string;
  /** The record now in the snapshot; absent for a delete. */
  record?: InstanceRecord;
  /** The record the snapshot held before; absent for a new instance. */
  previous?: InstanceRecord;
}

export interface ServiceSummary {
  group: string;
  service: string;
  /** Versions with at least one instance, lowest first. */
  versions: string[];
  /** Instances of any status. */
  instances: number;
  /** Instances whose status is `passing`. */
  passing: number;
}

const checkResultSchema = z.object({
  status: z.enum(['passing', 'warning', 'critical']),
  output: z.string(),
  at: z.string(),
  durationMs: z.number(),
});

const exitInfoSchema = z.object({
  code: z.number().int().nullable(),
  signal: z.string().nullable(),
  at: z.string(),
  oomKilled: z.boolean().optional(),
});

const instanceRecordSchema: z.ZodType<InstanceRecord> = z.object({
  id: z.string().min(1),
  node: z.string(),
  group: z.string().min(1),
  service: z.string().min(1),
  version: z.string().min(1),
  address: z.string(),
  port: z.number().int().min(0).max(65_535),
  pid: z.number().int().nullable(),
  status: z.enum(INSTANCE_STATUSES),
  restarts: z.number().int().min(0),
  source: z.enum(['supervised', 'external']),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  updatedAt: z.string(),
  lastCheck: checkResultSchema.nullable(),
  lastExit: exitInfoSchema.nullable(),
  reason: z.string().nullable(),
  weight: z.number().min(0).default(1),
  registration: z
    .object({
      ttlMs: z.number().int().positive().nullable(),
      http: z.object({ path: z.string(), intervalMs: z.number().int().positive(), timeoutMs: z.number().int().positive() }).nullable(),
      deregisterAfterMs: z.number().int().min(0),
      lastHeartbeat: z.string().nullable(),
      tags: z.array(z.string()),
    })
    .nullable()
    .default(null),
});

/** Attempts at list + watch before giving up when the store keeps compacting under us. */
const OPEN_ATTEMPTS = 5;

interface Waiter {
  done: () => boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class Catalog {
  readonly #store: Store;
  readonly #onInvalid: (key: string, err: Error) => void;
  readonly #onListenerError: (err: unknown) => void;

  readonly #records = new Map<string, InstanceRecord>();
  /** Every record in list order; rebuilt lazily after a change so readers sort once per change, not per call. */
  #sorted: InstanceRecord[] | undefined;
  #revision = 0;
  /**
   * Ids with a `remove` in progress, and the delete events seen for each since:
   * Store.delete does not return a revision, so `remove` waits for the next
   * delete event of its key instead. Entries live only while a remove waits.
   */
  readonly #removals = new Map<string, { waiting: number; deletes: number }>();
  readonly #listeners = new Set<(change: CatalogChange) => void>();
  #waiters: Waiter[] = [];
  #unwatch: Unwatch | undefined;
  #closed = false;

  private constructor(store: Store, options: CatalogOptions) {
    this.#store = store;
    this.#onInvalid = options.onInvalid ?? ((key, err) => warn(`Catalog skipped ${key}: ${err.message}`));
    this.#onListenerError = options.onListenerError ?? ((err) => warn(`A catalog subscriber threw: ${err instanceof Error ? err.message : String(err)}`));
  }

  /** Loads every instance record from `store` and follows its changes until `close()`. */
  static async open(store: Store, options: CatalogOptions = {}): Promise<Catalog> {
    const catalog = new Catalog(store, options);
    await catalog.#follow();
    return catalog;
  }

  async #follow(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const listed = await this.#store.list(INSTANCE_PREFIX);
      this.#records.clear();
      for (const kv of listed.items) {
        const record = this.#parse(kv.key, kv.value);
        if (record !== undefined) this.#records.set(record.id, record);
      }
      this.#sorted = undefined;
      this.#revision = listed.revision;
      try {
        this.#unwatch = await this.#store.watch(INSTANCE_PREFIX, (events) => this.#apply(events), { fromRevision: listed.revision + 1 });
        return;
      } catch (err) {
        // Only possible when more changes than the store's history landed between list and watch: list again.
        if (!isBerthError(err, 'BERTH_ERR_STORE_COMPACTED') || attempt >= OPEN_ATTEMPTS) throw err;
      }
    }
  }

  /** The store revision the snapshot reflects. */
  get revision(): number {
    return this.#revision;
  }

  /** Number of instances in the snapshot. */
  get size(): number {
    return this.#records.size;
  }

  get(id: string): InstanceRecord | undefined {
    return this.#records.get(id);
  }

  /** Instances matching every given field, sorted by group, service, version, createdAt, id. Records are frozen. */
  list(filter: CatalogFilter = {}): InstanceRecord[] {
    const all = (this.#sorted ??= [...this.#records.values()].sort(compareRecords));
    const { service, group, node, statuses } = filter;
    if (service === undefined && group === undefined && node === undefined && statuses === undefined) return all.slice();
    return all.filter(
      (r) =>
        (service === undefined || r.service === service) &&
        (group === undefined || r.group === group) &&
        (node === undefined || r.node === node) &&
        (statuses === undefined || statuses.includes(r.status)),
    );
  }

  /** One line per (group, service), sorted by group then service. */
  services(): ServiceSummary[] {
    const byService = new Map<string, { group: string; service: string; versions: Set<string>; instances: number; passing: number }>();
    for (const record of this.#records.values()) {
      const key = `${record.group}\u0000${record.service}`;
      let entry = byService.get(key);
      if (entry === undefined) {
        entry = { group: record.group, service: record.service, versions: new Set(), instances: 0, passing: 0 };
        byService.set(key, entry);
      }
      entry.versions.add(record.version);
      entry.instances++;
      if (record.status === 'passing') entry.passing++;
    }
    return [...byService.values()]
      .map((e) => ({ group: e.group, service: e.service, versions: [...e.versions].sort(compareVersions), instances: e.instances, passing: e.passing }))
      .sort((a, b) => compareStrings(a.group, b.group) || compareStrings(a.service, b.service));
  }

  /** Writes the record; resolves once the snapshot holds it. */
  async put(record: InstanceRecord): Promise<void> {
    this.#assertOpen();
    const checked = instanceRecordSchema.safeParse(record);
    if (!checked.success) {
      throw new BerthError('BERTH_ERR_BAD_REQUEST', `Instance record ${JSON.stringify(record.id)} is invalid`, {
        details: checked.error.issues.map((issue) => ({ where: issue.path.join('.'), message: issue.message })),
      });
    }
    const revision = await this.#store.put(INSTANCE_PREFIX + record.id, JSON.stringify(record));
    await this.#waitFor(() => this.#revision >= revision);
  }

  /** Deletes the instance; resolves once the snapshot no longer holds it. Removing an unknown id is not an error. */
  async remove(id: string): Promise<void> {
    this.#assertOpen();
    // Registered before the delete so that its event cannot slip past unnoticed.
    let removal = this.#removals.get(id);
    if (removal === undefined) {
      removal = { waiting: 0, deletes: 0 };
      this.#removals.set(id, removal);
    }
    const tracked = removal;
    tracked.waiting++;
    const seenBefore = tracked.deletes;
    try {
      const existed = await this.#store.delete(INSTANCE_PREFIX + id);
      // When the key was already gone but the snapshot still shows it, someone else's delete is on its way: wait for it too.
      if (!existed && !this.#records.has(id)) return;
      await this.#waitFor(() => tracked.deletes > seenBefore);
    } finally {
      if (--tracked.waiting === 0) this.#removals.delete(id);
    }
  }

  /**
   * Deletes the oldest `stopped` records beyond `keepPerService` for each
   * (group, service), oldest `updatedAt` first. Resolves with how many were removed.
   */
  async pruneHistory(options: { keepPerService: number }): Promise<number> {
    const keep = options.keepPerService;
    if (!Number.isSafeInteger(keep) || keep < 0) throw new RangeError(`keepPerService must be a non-negative integer, got ${keep}`);
    const stoppedByService = new Map<string, InstanceRecord[]>();
    for (const record of this.#records.values()) {
      if (record.status !== 'stopped') continue;
      const key = `${record.group}\u0000${record.service}`;
      const list = stoppedByService.get(key) ?? [];
      list.push(record);
      stoppedByService.set(key, list);
    }
    const doomed: string[] = [];
    for (const records of stoppedByService.values()) {
      // Newest first; ties broken by id so the choice does not depend on map order.
      records.sort((a, b) => compareStrings(b.updatedAt, a.updatedAt) || compareStrings(a.id, b.id));
      for (const record of records.slice(keep)) doomed.push(record.id);
    }
    await Promise.all(doomed.map((id) => this.remove(id)));
    return doomed.length;
  }

  /** Calls `listener` after each change to the snapshot. Returns the unsubscribe function. */
  subscribe(listener: (change: CatalogChange) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Stops following the store (the store stays open). Pending put/remove calls reject with BERTH_ERR_CATALOG_CLOSED; the last snapshot stays readable. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(closedError());
    const unwatch = this.#unwatch;
    this.#unwatch = undefined;
    await unwatch?.();
  }

  #apply(events: WatchEvent[]): void {
    if (this.#closed) return;
    for (const event of events) {
      const id = event.key.slice(INSTANCE_PREFIX.length);
      const previous = this.#records.get(id);
      let record: InstanceRecord | undefined;
      if (event.type === 'put') record = this.#parse(event.key, event.value);
      this.#revision = event.revision;
      if (record !== undefined) {
        this.#records.set(id, record);
        this.#sorted = undefined;
        this.#notify({ type: 'put', id, record, ...(previous && { previous }) });
      } else {
        // A delete, or a put whose value is not a valid record: either way the store holds no usable record for this id.
        if (event.type === 'delete') {
          const removal = this.#removals.get(id);
          if (removal !== undefined) removal.deletes++;
        }
        if (previous !== undefined) {
          this.#records.delete(id);
          this.#sorted = undefined;
          this.#notify({ type: 'delete', id, previous });
        }
      }
    }
    this.#settleWaiters();
  }

  #parse(key: string, value: string): InstanceRecord | undefined {
    const id = key.slice(INSTANCE_PREFIX.length);
    let json: unknown;
    try {
      json = JSON.parse(value);
    } catch (err) {
      this.#invalid(key, new Error(`not JSON: ${(err as Error).message}`, { cause: err }));
      return undefined;
    }
    const checked = instanceRecordSchema.safeParse(json);
    if (!checked.success) {
      const problems = checked.error.issues.map((issue) => `${issue.path.join('.') || '(record)'}: ${issue.message}`).join('; ');
      this.#invalid(key, new Error(`not an instance record: ${problems}`, { cause: checked.error }));
      return undefined;
    }
    if (checked.data.id !== id) {
      this.#invalid(key, new Error(`record id ${JSON.stringify(checked.data.id)} does not match its key`));
      return undefined;
    }
    return freezeRecord(checked.data);
  }

  #invalid(key: string, err: Error): void {
    try {
      this.#onInvalid(key, err);
    } catch (handlerErr) {
      this.#onListenerError(handlerErr);
    }
  }

  #notify(change: CatalogChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        try {
          this.#onListenerError(err);
        } catch {
          // The error handler failed too; the snapshot must still move on.
        }
      }
    }
  }

  #waitFor(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    if (this.#closed) return Promise.reject(closedError());
    return new Promise((resolve, reject) => this.#waiters.push({ done, resolve, reject }));
  }

  #settleWaiters(): void {
    if (this.#waiters.length === 0) return;
    const pending: Waiter[] = [];
    for (const waiter of this.#waiters) {
      if (waiter.done()) waiter.resolve();
      else pending.push(waiter);
    }
    this.#waiters = pending;
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError();
  }
}

function closedError(): BerthError {
  return new BerthError('BERTH_ERR_CATALOG_CLOSED', 'The catalog is closed');
}

function warn(message: string): void {
  process.emitWarning(message, { code: 'BERTH_CATALOG' });
}

/** Readers share the snapshot's objects; freezing them keeps one reader from changing what the others see. */
function freezeRecord(record: InstanceRecord): InstanceRecord {
  if (record.lastCheck !== null) Object.freeze(record.lastCheck);
  if (record.lastExit !== null) Object.freeze(record.lastExit);
  return Object.freeze(record);
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareRecords(a: InstanceRecord, b: InstanceRecord): number {
  return (
    compareStrings(a.group, b.group) ||
    compareStrings(a.service, b.service) ||
    compareVersions(a.version, b.version) ||
    compareStrings(a.createdAt, b.createdAt) ||
    compareStrings(a.id, b.id)
  );
}

/** Semver precedence (so 1.10.0 follows 1.9.0, and 2.0.0-rc.1 precedes 2.0.0); semver versions first, then plain string order. */
export function compareVersions(a: string, b: string): number {
  const va = semver.valid(a);
  const vb = semver.valid(b);
  if (va && vb) return semver.compare(va, vb) || compareStrings(a, b);
  if (va || vb) return va ? -1 : 1;
  return compareStrings(a, b);
}
