/**
 * API keys: how a program calls the services of a group through the gateway
 * (`x-api-key: bk_…`) when it has no JWT. They work as the admin API's tokens
 * do (src/admin/tokens.ts): a key is `bk_` + 32 random bytes (base64url), the
 * node keeps only its SHA-256, the secret is shown once when the key is
 * created, and records live in the node's `Store` under `apikeys/`, watched,
 * so nodes sharing an etcd store share their keys.
 *
 * A key is for the groups it names (or `*`: every group), and carries the
 * subject, roles and scopes the gateway's `authorize` rules and the instance
 * see.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { Store, Unwatch, WatchEvent } from '../catalog/store.js';
import type { Identity } from './identity.js';

/** An API key as the API and the CLI show it: never the secret, never its hash. */
export interface ApiKeyInfo {
  id: string;
  name: string;
  /** Groups the key opens; `*` for every group. */
  groups: string[];
  subject: string;
  roles: string[];
  scopes: string[];
  createdAt: string;
  /** When the key last opened a request; updated at most once a minute. */
  lastUsedAt?: string;
}

export interface ApiKeyInput {
  name: string;
  groups: string[];
  /** Default: the name. */
  subject?: string;
  roles?: string[];
  scopes?: string[];
}

/** What the store holds per key (`apikeys/<id>`). Written once: revocation deletes it. */
interface ApiKeyRecord {
  id: string;
  name: string;
  groups: string[];
  subject: string;
  roles: string[];
  scopes: string[];
  createdAt: string;
  /** SHA-256 of the secret, hex. */
  sha256: string;
}

export type ApiKeyCheck = { ok: true; identity: Identity; keyId: string } | { ok: false; reason: 'unknown' | 'not-for-group' };

/** A key as verify needs it: the answer is built once, so a request allocates nothing but the hash. */
interface Entry {
  record: ApiKeyRecord;
  allGroups: boolean;
  ok: ApiKeyCheck;
}

export const APIKEY_PREFIX = 'apikeys/';
/** `lastUsedAt` has a key of its own (`apikeys/<id>/used`), so writing it can never bring back a revoked key. */
const USED_SUFFIX = '/used';
const SECRET_PREFIX = 'bk_';
/** `lastUsedAt` is written at most this often per key: a busy client must not write the store on every request. */
const USED_WRITE_EVERY_MS = 60_000;

/** The HTTP header that carries an API key. */
export const APIKEY_HEADER = 'x-api-key';

export const APIKEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** The manifest's group names (src/manifest/schema.ts NAME), or `*`. */
const GROUP = /^(?:\*|[a-z][a-z0-9-]{0,62})$/;
/** Visible ASCII, no `,` (the separator of x-berth-roles). */
const ROLE_OR_SCOPE = /^[\x21-\x2b\x2d-\x7e]{1,128}$/;
/** A subject travels in x-berth-subject: printable, no control characters. */
// eslint-disable-next-line no-control-regex -- the control characters are what it refuses
const SUBJECT = /^[^\x00-\x1f\x7f]{1,256}$/;
const MAX_LIST = 64;

const UNKNOWN: ApiKeyCheck = Object.freeze({ ok: false, reason: 'unknown' });
const NOT_FOR_GROUP: ApiKeyCheck = Object.freeze({ ok: false, reason: 'not-for-group' });

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export interface ApiKeysOptions {
  clock?: Clock;
  /** Told about a record that cannot be read (skipped) or a `lastUsedAt` write that failed. */
  onError?: (err: unknown) => void;
}

/** The node's API keys: create, list, revoke, and check a presented secret for a group. */
export class ApiKeys {
  readonly #store: Pick<Store, 'put' | 'delete'>;
  readonly #clock: Clock;
  readonly #onError: (err: unknown) => void;
  readonly #byId = new Map<string, Entry>();
  readonly #byHash = new Map<string, Entry>();
  /** The store revision that wrote each record: creation order, even within one millisecond. */
  readonly #revisions = new Map<string, number>();
  readonly #used = new Map<string, string>();
  /** When this node last wrote each key's `lastUsedAt`. */
  readonly #usedWrittenAt = new Map<string, number>();
  #unwatch: Unwatch | undefined;

  private constructor(store: Pick<Store, 'put' | 'delete'>, options: ApiKeysOptions) {
    this.#store = store;
    this.#clock = options.clock ?? systemClock;
    this.#onError = options.onError ?? (() => undefined);
  }

  /** Reads every key of `store` and watches for changes (another node's, on a shared store). */
  static async open(store: Pick<Store, 'put' | 'delete' | 'list' | 'watch'>, options: ApiKeysOptions = {}): Promise<ApiKeys> {
    const keys = new ApiKeys(store, options);
    const listed = await store.list(APIKEY_PREFIX);
    for (const item of listed.items) keys.#apply({ type: 'put', key: item.key, value: item.value, revision: item.revision });
    keys.#unwatch = await store.watch(APIKEY_PREFIX, (events) => events.forEach((e) => keys.#apply(e)), { fromRevision: listed.revision + 1 });
    return keys;
  }

  /** Creates a key; the secret is in the answer and nowhere else. Throws TypeError naming a bad field. */
  async create(input: ApiKeyInput): Promise<{ key: ApiKeyInfo; secret: string }> {
    const { name, groups, subject = name, roles = [], scopes = [] } = input;
    if (!APIKEY_NAME.test(name)) throw new TypeError(`API key name must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`);
    if (groups.length === 0 || groups.length > MAX_LIST) throw new TypeError(`an API key is for 1 to ${MAX_LIST} groups (or "*" for every group)`);
    for (const group of groups) if (!GROUP.test(group)) throw new TypeError(`API key group must be a group name or "*"; got ${JSON.stringify(group)}`);
    if (!SUBJECT.test(subject)) throw new TypeError('API key subject must be 1-256 characters without control characters');
    for (const [what, list] of [['role', roles], ['scope', scopes]] as const) {
      if (list.length > MAX_LIST) throw new TypeError(`an API key has at most ${MAX_LIST} ${what}s`);
      for (const item of list) if (!ROLE_OR_SCOPE.test(item)) throw new TypeError(`API key ${what} must be 1-128 visible ASCII characters other than ","; got ${JSON.stringify(item)}`);
    }
    const secret = SECRET_PREFIX + randomBytes(32).toString('base64url');
    const record: ApiKeyRecord = {
      id: `key_${randomBytes(6).toString('hex')}`,
      name,
      groups: [...new Set(groups)],
      subject,
      roles: [...new Set(roles)],
      scopes: [...new Set(scopes)],
      createdAt: new Date(this.#clock.now()).toISOString(),
      sha256: hashSecret(secret),
    };
    const revision = await this.#store.put(APIKEY_PREFIX + record.id, JSON.stringify(record));
    // Usable at once, before the watch delivers the change.
    this.#set(record, revision);
    return { key: this.#info(record), secret };
  }

  /** Every key, oldest first, without secrets. */
  list(): ApiKeyInfo[] {
    const order = (r: ApiKeyRecord): number => this.#revisions.get(r.id) ?? 0;
    return [...this.#byId.values()]
      .map((e) => e.record)
      .sort((a, b) => order(a) - order(b))
      .map((r) => this.#info(r));
  }

  /** One key, without its secret. */
  get(id: string): ApiKeyInfo | undefined {
    const entry = this.#byId.get(id);
    return entry === undefined ? undefined : this.#info(entry.record);
  }

  /** Deletes a key; resolves false when there was none with that id. Refused at once, on this node. */
  async revoke(id: string): Promise<boolean> {
    const existed = this.#remove(id);
    this.#used.delete(id);
    const deleted = await this.#store.delete(APIKEY_PREFIX + id);
    await this.#store.delete(APIKEY_PREFIX + id + USED_SUFFIX);
    return existed || deleted;
  }

  /**
   * The identity of the key whose secret this is, when the key is for
   * `group`. A lookup by the secret's SHA-256: its timing can tell at most
   * something about a hash, and finding a secret from its hash is what
   * SHA-256 rules out.
   */
  verify(secret: string, group: string): ApiKeyCheck {
    const entry = this.#byHash.get(hashSecret(secret));
    if (entry === undefined) return UNKNOWN;
    if (!entry.allGroups && !entry.record.groups.includes(group)) return NOT_FOR_GROUP;
    this.#touch(entry.record.id);
    return entry.ok;
  }

  /** Stops watching the store. */
  async close(): Promise<void> {
    await this.#unwatch?.();
    this.#unwatch = undefined;
  }

  #set(record: ApiKeyRecord, revision: number): void {
    this.#remove(record.id);
    const identity: Identity = Object.freeze({
      kind: 'apikey',
      subject: record.subject,
      issuer: null,
      roles: Object.freeze([...record.roles]),
      scopes: Object.freeze([...record.scopes]),
      claims: Object.freeze({ sub: record.subject, key_id: record.id, key_name: record.name }),
    });
    const entry: Entry = { record, allGroups: record.groups.includes('*'), ok: Object.freeze({ ok: true, identity, keyId: record.id }) };
    this.#byId.set(record.id, entry);
    this.#byHash.set(record.sha256, entry);
    this.#revisions.set(record.id, revision);
  }

  #remove(id: string): boolean {
    const entry = this.#byId.get(id);
    if (entry === undefined) return false;
    this.#byId.delete(id);
    this.#byHash.delete(entry.record.sha256);
    this.#revisions.delete(id);
    return true;
  }

  #touch(id: string): void {
    const now = this.#clock.now();
    const last = this.#usedWrittenAt.get(id);
    if (last !== undefined && now - last < USED_WRITE_EVERY_MS) return;
    this.#usedWrittenAt.set(id, now);
    const at = new Date(now).toISOString();
    this.#used.set(id, at);
    this.#store.put(APIKEY_PREFIX + id + USED_SUFFIX, at).catch((err: unknown) => this.#onError(err));
  }

  #info(record: ApiKeyRecord): ApiKeyInfo {
    const used = this.#used.get(record.id);
    return {
      id: record.id,
      name: record.name,
      groups: [...record.groups],
      subject: record.subject,
      roles: [...record.roles],
      scopes: [...record.scopes],
      createdAt: record.createdAt,
      ...(used === undefined ? {} : { lastUsedAt: used }),
    };
  }

  #apply(event: WatchEvent): void {
    const rest = event.key.slice(APIKEY_PREFIX.length);
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
    const record = parseRecord(event.value);
    if (record === undefined || record.id !== rest) {
      this.#onError(new Error(`skipping the unreadable API key record ${event.key}`));
      return;
    }
    this.#set(record, event.revision);
  }
}

function parseRecord(text: string): ApiKeyRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((item) => typeof item === 'string');
  if (typeof r.id !== 'string' || typeof r.name !== 'string' || typeof r.subject !== 'string' || typeof r.createdAt !== 'string') return undefined;
  if (!strings(r.groups) || r.groups.length === 0 || !strings(r.roles) || !strings(r.scopes)) return undefined;
  if (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)) return undefined;
  return { id: r.id, name: r.name, groups: r.groups, subject: r.subject, roles: r.roles, scopes: r.scopes, createdAt: r.createdAt, sha256: r.sha256 };
}
