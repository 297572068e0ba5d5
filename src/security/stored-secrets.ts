/**
 * Secrets the node keeps as records in its `Store`: the admin API's tokens
 * (src/admin/tokens.ts) and the gateway's API keys (src/security/api-keys.ts).
 * A record lives under `<prefix><id>` and holds the SHA-256 of its secret,
 * never the secret. It is written once; revoking deletes it. A watch keeps
 * this node's copy current, so nodes sharing an etcd store share their
 * records.
 *
 * Each user owns its record's own fields, their checks and what it answers;
 * this module owns where and how the records are kept.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { Store, Unwatch, WatchEvent } from '../catalog/store.js';

/** The fields every record has; a user's record adds its own. */
export interface StoredSecret {
  id: string;
  name: string;
  createdAt: string;
  /** SHA-256 of the secret, hex. */
  sha256: string;
}

/** A stored value whose common fields were checked, the rest not yet. */
export type StoredFields = StoredSecret & Readonly<Record<string, unknown>>;

export interface StoredSecretsOptions {
  clock?: Clock;
  /** Told about a record that cannot be read (skipped) or a `lastUsedAt` write that failed. */
  onError?: (err: unknown) => void;
}

export interface StoredSecretsKind<R extends StoredSecret> {
  /** Where the records live: `tokens/`, `apikeys/`. */
  prefix: string;
  /** What a record is called in the error about one that cannot be read: `token`, `API key`. */
  noun: string;
  /** The whole record, or undefined when a field of its own is missing or bad. */
  read: (fields: StoredFields) => R | undefined;
}

/**
 * `lastUsedAt` has a key of its own (`<prefix><id>/used`), so that writing it
 * can never bring back a record a revocation deleted in the meantime.
 */
const USED_SUFFIX = '/used';
/** `lastUsedAt` is written at most this often per record: a busy client must not write the store on every request. */
const USED_WRITE_EVERY_MS = 60_000;

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** `prefix` and 43 base64url characters (32 random bytes). */
export function randomSecret(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

/** `prefix` and 12 hex digits. */
export function randomId(prefix: string): string {
  return prefix + randomBytes(6).toString('hex');
}

/** The records of one kind in the node's store, as this node last saw them. */
export class StoredSecrets<R extends StoredSecret> {
  readonly #store: Pick<Store, 'put' | 'delete'>;
  readonly #kind: StoredSecretsKind<R>;
  readonly #clock: Clock;
  readonly #onError: (err: unknown) => void;
  readonly #byId = new Map<string, R>();
  readonly #byHash = new Map<string, R>();
  /** The store revision that wrote each record: creation order, even within one millisecond. */
  readonly #revisions = new Map<string, number>();
  readonly #used = new Map<string, string>();
  /** When this node last wrote each record's `lastUsedAt`. */
  readonly #usedWrittenAt = new Map<string, number>();
  #unwatch: Unwatch | undefined;

  private constructor(store: Pick<Store, 'put' | 'delete'>, kind: StoredSecretsKind<R>, options: StoredSecretsOptions) {
    this.#store = store;
    this.#kind = kind;
    this.#clock = options.clock ?? systemClock;
    this.#onError = options.onError ?? (() => undefined);
  }

  /** Reads every record under the kind's prefix and watches for changes (another node's, on a shared store). */
  static async open<R extends StoredSecret>(store: Pick<Store, 'put' | 'delete' | 'list' | 'watch'>, kind: StoredSecretsKind<R>, options: StoredSecretsOptions = {}): Promise<StoredSecrets<R>> {
    const secrets = new StoredSecrets(store, kind, options);
    const listed = await store.list(kind.prefix);
    for (const item of listed.items) secrets.#apply({ type: 'put', key: item.key, value: item.value, revision: item.revision });
    secrets.#unwatch = await store.watch(kind.prefix, (events) => events.forEach((e) => secrets.#apply(e)), { fromRevision: listed.revision + 1 });
    return secrets;
  }

  /** Writes a new record, as JSON with its fields in the order given. */
  async add(record: R): Promise<void> {
    const revision = await this.#store.put(this.#kind.prefix + record.id, JSON.stringify(record));
    // Usable at once, before the watch delivers the change.
    this.#set(record, revision);
  }

  /** Every record, oldest first. */
  list(): R[] {
    const order = (r: R): number => this.#revisions.get(r.id) ?? 0;
    return [...this.#byId.values()].sort((a, b) => order(a) - order(b));
  }

  /** Every record, in no particular order. */
  values(): IterableIterator<R> {
    return this.#byId.values();
  }

  get(id: string): R | undefined {
    return this.#byId.get(id);
  }

  /** The record whose secret this is: a lookup by the secret's SHA-256. */
  find(secret: string): R | undefined {
    return this.#byHash.get(hashSecret(secret));
  }

  /** When the record last opened a request, as far as this node knows. */
  lastUsedAt(id: string): string | undefined {
    return this.#used.get(id);
  }

  /** Notes that the record opened a request now; written to the store at most once a minute. */
  touch(id: string): void {
    const now = this.#clock.now();
    const last = this.#usedWrittenAt.get(id);
    if (last !== undefined && now - last < USED_WRITE_EVERY_MS) return;
    this.#usedWrittenAt.set(id, now);
    const at = new Date(now).toISOString();
    this.#used.set(id, at);
    this.#store.put(this.#kind.prefix + id + USED_SUFFIX, at).catch((err: unknown) => this.#onError(err));
  }

  /** Deletes a record and its last use; resolves false when there was none with that id. Gone at once, on this node. */
  async revoke(id: string): Promise<boolean> {
    const existed = this.#remove(id);
    this.#used.delete(id);
    const deleted = await this.#store.delete(this.#kind.prefix + id);
    await this.#store.delete(this.#kind.prefix + id + USED_SUFFIX);
    return existed || deleted;
  }

  /** Stops watching the store. */
  async close(): Promise<void> {
    await this.#unwatch?.();
    this.#unwatch = undefined;
  }

  #set(record: R, revision: number): void {
    this.#remove(record.id);
    this.#byId.set(record.id, record);
    this.#byHash.set(record.sha256, record);
    this.#revisions.set(record.id, revision);
  }

  #remove(id: string): boolean {
    const record = this.#byId.get(id);
    if (record === undefined) return false;
    this.#byId.delete(id);
    this.#byHash.delete(record.sha256);
    this.#revisions.delete(id);
    return true;
  }

  #apply(event: WatchEvent): void {
    const rest = event.key.slice(this.#kind.prefix.length);
    if (rest.endsWith(USED_SUFFIX)) {
      const id = rest.slice(0, -USED_SUFFIX.length);
      if (event.type === 'delete') this.#used.delete(id);
      else this.#used.set(id, event.value);
      return;
    }
    if (event.type === 'delete') {
      this.#remove(rest);
      return;
    }
    const record = this.#parse(event.value);
    if (record === undefined || record.id !== rest) {
      this.#onError(new Error(`skipping the unreadable ${this.#kind.noun} record ${event.key}`));
      return;
    }
    this.#set(record, event.revision);
  }

  #parse(text: string): R | undefined {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return undefined;
    }
    if (typeof value !== 'object' || value === null) return undefined;
    const r = value as Record<string, unknown>;
    if (typeof r.id !== 'string' || typeof r.name !== 'string' || typeof r.createdAt !== 'string') return undefined;
    if (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)) return undefined;
    return this.#kind.read(r as StoredFields);
  }
}
