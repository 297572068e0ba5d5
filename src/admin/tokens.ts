/**
 * Bearer tokens of the admin API. A token is `berth_` + 32 random bytes
 * (base64url); the node keeps only its SHA-256, so the store file (or an etcd
 * snapshot) holds nothing that opens the API. The secret is shown once, when
 * the token is created. A slow hash (scrypt, argon2) would add nothing: 256
 * random bits cannot be guessed, whatever the hash costs.
 *
 * Records live in the node's `Store` under `tokens/`, so nodes sharing an etcd
 * store share their tokens; a watch keeps this node's copy current
 * (src/security/stored-secrets.ts, as for API keys).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { Store } from '../catalog/store.js';
import { hashSecret, randomId, randomSecret, StoredSecrets, type StoredFields, type StoredSecret, type StoredSecretsOptions } from '../security/stored-secrets.js';

export { hashSecret };

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

/** What the store holds per token (`tokens/<id>`): id, name, role, createdAt, sha256. Written once: revocation deletes it. */
interface TokenRecord extends StoredSecret {
  role: Role;
}

export const TOKEN_PREFIX = 'tokens/';
const SECRET_PREFIX = 'berth_';

/** The file in the data dir where a node writes the admin token it creates on first start. */
export const ADMIN_TOKEN_FILE = 'admin-token';

export const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A new secret: `berth_` and 43 base64url characters (32 random bytes). */
export function newSecret(): string {
  return randomSecret(SECRET_PREFIX);
}

export type AdminTokensOptions = StoredSecretsOptions;

/** The admin API's tokens: create, list, revoke, and check a presented secret. */
export class AdminTokens {
  readonly #records: StoredSecrets<TokenRecord>;
  readonly #clock: Clock;

  private constructor(records: StoredSecrets<TokenRecord>, clock: Clock) {
    this.#records = records;
    this.#clock = clock;
  }

  /** Reads every token of `store` and watches for changes (another node's, on a shared store). */
  static async open(store: Pick<Store, 'put' | 'delete' | 'list' | 'watch'>, options: AdminTokensOptions = {}): Promise<AdminTokens> {
    const records = await StoredSecrets.open(store, { prefix: TOKEN_PREFIX, noun: 'token', read: readRecord }, options);
    return new AdminTokens(records, options.clock ?? systemClock);
  }

  /** Creates a token; the secret is in the answer and nowhere else. */
  async create(name: string, role: Role): Promise<{ token: TokenInfo; secret: string }> {
    if (!TOKEN_NAME.test(name)) throw new TypeError(`token name must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit; got ${JSON.stringify(name)}`);
    if (!ROLES.includes(role)) throw new TypeError(`token role must be one of ${ROLES.join(', ')}; got ${JSON.stringify(role)}`);
    const secret = newSecret();
    const record: TokenRecord = { id: randomId('tok_'), name, role, createdAt: new Date(this.#clock.now()).toISOString(), sha256: hashSecret(secret) };
    await this.#records.add(record);
    return { token: this.#info(record), secret };
  }

  /** Every token, oldest first, without secrets. */
  list(): TokenInfo[] {
    return this.#records.list().map((r) => this.#info(r));
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
  revoke(id: string): Promise<boolean> {
    return this.#records.revoke(id);
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
    this.#records.touch(found.id);
    return this.#info(found);
  }

  /** Stops watching the store. */
  async close(): Promise<void> {
    await this.#records.close();
  }

  #info(record: TokenRecord): TokenInfo {
    const used = this.#records.lastUsedAt(record.id);
    return { id: record.id, name: record.name, role: record.role, createdAt: record.createdAt, ...(used === undefined ? {} : { lastUsedAt: used }) };
  }
}

function readRecord(r: StoredFields): TokenRecord | undefined {
  if (typeof r.role !== 'string' || !(ROLES as readonly string[]).includes(r.role)) return undefined;
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
