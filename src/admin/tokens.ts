/**
 * Bearer tokens of the admin API. A token is `berth_` + 32 random bytes
 * (base64url); the node keeps only its SHA-256, so the store file (or an etcd
 * snapshot) holds nothing that opens the API. The secret is shown once, when
 * the token is created. A slow hash (scrypt, argon2) would add nothing: 256
 * random bits cannot be guessed, whatever the hash costs.
 *
 * Records live in the node's `Store` under `tokens/`, so nodes sharing an etcd
 * store share their tokens; a watch keeps this node's copy current.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { Store, Unwatch, WatchEvent } from '../catalog/store.js';

/** Roles, lowest first: each may do what the ones before it may. */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Whether `role` may do what `required` may. */
export function roleAtLeast(role: Role, required: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(required);
}

/** A token as the API and the CLI show it: never the secret, never its hash. */
export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  /** When the token last opened a request; updated at most once a minute. */
  lastUsedAt?: string;
}

/** What the store holds per token (`tokens/<id>`). Written once: revocation deletes it. */
interface TokenRecord {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  /** SHA-256 of the secret, hex. */
  sha256: string;
}

export const TOKEN_PREFIX = 'tokens/';
/**
 * `lastUsedAt` has a key of its own (`tokens/<id>/used`), so that writing it
 * can never bring back a record a revocation deleted in the meantime.
 */
const USED_SUFFIX = '/used';
const SECRET_PREFIX = 'berth_';
/** `lastUsedAt` is written at most this often per token: a busy scraper must not write the store on every request. */
const USED_WRITE_EVERY_MS = 60_000;

/** The file in the data dir where a node writes the admin token it creates on first start. */
export const ADMIN_TOKEN_FILE = 'admin-token';

export const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A new secret: `berth_` and 43 base64url characters (32 random bytes). */
export function newSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64url');
}

function newId(): string {
  return `tok_${randomBytes(6).toString('hex')}`;
}

export interface AdminTokensOptions {
  clock?: Clock;
  /** Told about a record that cannot be read (skipped) or a `lastUsedAt` write that failed. */
  onError?: (err: unknown) => void;
}

/** The admin API's tokens: create, list, revoke, and check a presented secret. */
export class AdminTokens {
  readonly #store: Pick<Store, 'put' | 'delete'>;
  readonly #clock: Clock;
  readonly #onError: (err: unknown) => void;
  readonly #records = new Map<string, TokenRecord>();
  /** The store revision that wrote each record: creation order, even within one millisecond. */
  readonly #revisions = new Map<string, number>();
  readonly #used = new Map<string, string>();
  /** When this node last wrote each token's `lastUsedAt`. */
  readonly #usedWrittenAt = new Map<string, number>();
  #unwatch: Unwatch | undefined;

  private constructor(store: Pick<Store, 'put' | 'delete'>, options: AdminTokensOptions) {
    this.#store = store;
    this.#clock = options.clock ?? systemClock;
    this.#onError = options.onError ?? (() => undefined);
  }

  /** Reads every token of `store` and watches for changes (another node's, on a shared store). */
  static async open(store: Pick<Store, 'put' | 'delete' | 'list' | 'watch'>, options: AdminTokensOptions = {}): Promise<AdminTokens> {
    const tokens = new AdminTokens(store, options);
    const listed = await store.list(TOKEN_PREFIX);
    for (const item of listed.items) tokens.#apply({ type: 'put', key: item.key, value: item.value, revision: item.revision });
    tokens.#unwatch = await store.watch(TOKEN_PREFIX, (events) => events.forEach((e) => tokens.#apply(e)), { fromRevision: listed.revision + 1 });
    return tokens;
  }

  /** Creates a token; the secret is in the answer and nowhere else. */
  async create(name: string, role: Role): Promise<{ token: TokenInfo; secret: string }> {
    if (!TOKEN_NAME.test(name)) throw new TypeError(`token name must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`);
    if (!ROLES.includes(role)) throw new TypeError(`token role must be one of ${ROLES.join(', ')}; got ${JSON.stringify(role)}`);
    const secret = newSecret();
    const record: TokenRecord = { id: newId(), name, role, createdAt: new Date(this.#clock.now()).toISOString(), sha256: hashSecret(secret) };
    const revision = await this.#store.put(TOKEN_PREFIX + record.id, JSON.stringify(record));
    // Usable at once, before the watch delivers the change.
    this.#records.set(record.id, record);
    this.#revisions.set(record.id, revision);
    return { token: this.#info(record), secret };
  }

  /** Every token, oldest first, without secrets. */
  list(): TokenInfo[] {
    const order = (r: TokenRecord): number => this.#revisions.get(r.id) ?? 0;
    return [...this.#records.values()].sort((a, b) => order(a) - order(b)).map((r) => this.#info(r));
  }

  /** One token, without its secret. */
  get(id: string): TokenInfo | undefined {
    const record = this.#records.get(id);
    return record === undefined ? undefined : this.#info(record);
  }

  /** Whether a token of this role (or higher) exists. */
  has(role: Role): boolean {
    return [...this.#records.values()].some((r) => roleAtLeast(r.role, role));
  }

  /** Deletes a token; resolves false when there was none with that id. Refused at once, on this node. */
  async revoke(id: string): Promise<boolean> {
    const existed = this.#records.delete(id);
    this.#revisions.delete(id);
    this.#used.delete(id);
    const deleted = await this.#store.delete(TOKEN_PREFIX + id);
    await this.#store.delete(TOKEN_PREFIX + id + USED_SUFFIX);
    return existed || deleted;
  }

  /**
   * The token whose secret this is, or undefined. Every record is compared,
   * each in constant time, so the answer's timing tells nothing about which
   * hash matched or how closely.
   */
  verify(secret: string): TokenInfo | undefined {
    const presented = Buffer.from(hashSecret(secret), 'hex');
    let found: TokenRecord | undefined;
    for (const record of this.#records.values()) {
      const stored = Buffer.from(record.sha256, 'hex');
      if (stored.length === presented.length && timingSafeEqual(stored, presented) && found === undefined) found = record;
    }
    if (found === undefined) return undefined;
    this.#touch(found.id);
    return this.#info(found);
  }

  /** Stops watching the store. */
  async close(): Promise<void> {
    await this.#unwatch?.();
    this.#unwatch = undefined;
  }

  #touch(id: string): void {
    const now = this.#clock.now();
    const last = this.#usedWrittenAt.get(id);
    if (last !== undefined && now - last < USED_WRITE_EVERY_MS) return;
    this.#usedWrittenAt.set(id, now);
    const at = new Date(now).toISOString();
    this.#used.set(id, at);
    this.#store.put(TOKEN_PREFIX + id + USED_SUFFIX, at).catch((err: unknown) => this.#onError(err));
  }

  #info(record: TokenRecord): TokenInfo {
    const used = this.#used.get(record.id);
    return { id: record.id, name: record.name, role: record.role, createdAt: record.createdAt, ...(used === undefined ? {} : { lastUsedAt: used }) };
  }

  #apply(event: WatchEvent): void {
    const rest = event.key.slice(TOKEN_PREFIX.length);
    if (rest.endsWith(USED_SUFFIX)) {
      const id = rest.slice(0, -USED_SUFFIX.length);
      if (event.type === 'delete') this.#used.delete(id);
      else this.#used.set(id, event.value);
      return;
    }
    if (event.type === 'delete') {
      this.#records.delete(rest);
      this.#revisions.delete(rest);
      return;
    }
    const record = parseRecord(event.value);
    if (record === undefined || record.id !== rest) {
      this.#onError(new Error(`skipping the unreadable token record ${event.key}`));
      return;
    }
    this.#records.set(record.id, record);
    this.#revisions.set(record.id, event.revision);
  }
}

function parseRecord(text: string): TokenRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  if (typeof r.id !== 'string' || typeof r.name !== 'string' || typeof r.createdAt !== 'string') return undefined;
  if (typeof r.role !== 'string' || !(ROLES as readonly string[]).includes(r.role)) return undefined;
  if (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)) return undefined;
  return { id: r.id, name: r.name, role: r.role as Role, createdAt: r.createdAt, sha256: r.sha256 };
}

/**
 * Writes `secret` to `<dataDir>/admin-token`, readable by its owner only. The
 * file is created with mode 0600 and renamed into place, so it is never
 * readable by others, not even for a moment, and never half written.
 */
export async function writeTokenFile(dataDir: string, secret: string): Promise<string> {
  const path = join(dataDir, ADMIN_TOKEN_FILE);
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  await rename(temp, path);
  return path;
}

/** The secret in `<dataDir>/admin-token`, or undefined when there is no such file (or it is empty). */
export async function readTokenFile(dataDir: string): Promise<string | undefined> {
  try {
    const text = (await readFile(join(dataDir, ADMIN_TOKEN_FILE), 'utf8')).trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}
