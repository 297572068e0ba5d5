/**
 * API keys: how a program calls the services of a group through the gateway
 * (`x-api-key: bk_…`) when it has no JWT. They are kept as the admin API's
 * tokens are (src/security/stored-secrets.ts): a key is `bk_` + 32 random
 * bytes (base64url), the node keeps only its SHA-256, the secret is shown once
 * when the key is created, and records live in the node's `Store` under
 * `apikeys/`, watched, so nodes sharing an etcd store share their keys.
 *
 * A key is for the groups it names (or `*`: every group), and carries the
 * subject, roles and scopes the gateway's `authorize` rules and the instance
 * see.
 */
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { Store } from '../catalog/store.js';
import type { Identity } from './identity.js';
import { hashSecret, randomId, randomSecret, StoredSecrets, type StoredFields, type StoredSecret, type StoredSecretsOptions } from './stored-secrets.js';

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

/** What the store holds per key (`apikeys/<id>`): id, name, groups, subject, roles, scopes, createdAt, sha256. Written once: revocation deletes it. */
interface ApiKeyRecord extends StoredSecret {
  groups: string[];
  subject: string;
  roles: string[];
  scopes: string[];
}

export type ApiKeyCheck = { ok: true; identity: Identity; keyId: string } | { ok: false; reason: 'unknown' | 'not-for-group' };

/** What verify answers for a key, built once per record, so a request allocates nothing but the hash. */
interface Answer {
  allGroups: boolean;
  ok: ApiKeyCheck;
}

export const APIKEY_PREFIX = 'apikeys/';
const SECRET_PREFIX = 'bk_';

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

export type ApiKeysOptions = StoredSecretsOptions;

/** The node's API keys: create, list, revoke, and check a presented secret for a group. */
export class ApiKeys {
  readonly #records: StoredSecrets<ApiKeyRecord>;
  readonly #clock: Clock;
  /** Keyed by the record object: a record replaced or revoked takes its answer with it. */
  readonly #answers = new WeakMap<ApiKeyRecord, Answer>();

  private constructor(records: StoredSecrets<ApiKeyRecord>, clock: Clock) {
    this.#records = records;
    this.#clock = clock;
  }

  /** Reads every key of `store` and watches for changes (another node's, on a shared store). */
  static async open(store: Pick<Store, 'put' | 'delete' | 'list' | 'watch'>, options: ApiKeysOptions = {}): Promise<ApiKeys> {
    const records = await StoredSecrets.open(store, { prefix: APIKEY_PREFIX, noun: 'API key', read: readRecord }, options);
    return new ApiKeys(records, options.clock ?? systemClock);
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
    const secret = randomSecret(SECRET_PREFIX);
    const record: ApiKeyRecord = {
      id: randomId('key_'),
      name,
      groups: [...new Set(groups)],
      subject,
      roles: [...new Set(roles)],
      scopes: [...new Set(scopes)],
      createdAt: new Date(this.#clock.now()).toISOString(),
      sha256: hashSecret(secret),
    };
    await this.#records.add(record);
    return { key: this.#info(record), secret };
  }

  /** Every key, oldest first, without secrets. */
  list(): ApiKeyInfo[] {
    return this.#records.list().map((r) => this.#info(r));
  }

  /** One key, without its secret. */
  get(id: string): ApiKeyInfo | undefined {
    const record = this.#records.get(id);
    return record === undefined ? undefined : this.#info(record);
  }

  /** Deletes a key; resolves false when there was none with that id. Refused at once, on this node. */
  revoke(id: string): Promise<boolean> {
    return this.#records.revoke(id);
  }

  /**
   * The identity of the key whose secret this is, when the key is for
   * `group`. A lookup by the secret's SHA-256: its timing can tell at most
   * something about a hash, and finding a secret from its hash is what
   * SHA-256 rules out.
   */
  verify(secret: string, group: string): ApiKeyCheck {
    const record = this.#records.find(secret);
    if (record === undefined) return UNKNOWN;
    const answer = this.#answer(record);
    if (!answer.allGroups && !record.groups.includes(group)) return NOT_FOR_GROUP;
    this.#records.touch(record.id);
    return answer.ok;
  }

  /** Stops watching the store. */
  async close(): Promise<void> {
    await this.#records.close();
  }

  #answer(record: ApiKeyRecord): Answer {
    const known = this.#answers.get(record);
    if (known !== undefined) return known;
    const identity: Identity = Object.freeze({
      kind: 'apikey',
      subject: record.subject,
      issuer: null,
      roles: Object.freeze([...record.roles]),
      scopes: Object.freeze([...record.scopes]),
      claims: Object.freeze({ sub: record.subject, key_id: record.id, key_name: record.name }),
    });
    const answer: Answer = { allGroups: record.groups.includes('*'), ok: Object.freeze({ ok: true, identity, keyId: record.id }) };
    this.#answers.set(record, answer);
    return answer;
  }

  #info(record: ApiKeyRecord): ApiKeyInfo {
    const used = this.#records.lastUsedAt(record.id);
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
}

function readRecord(r: StoredFields): ApiKeyRecord | undefined {
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((item) => typeof item === 'string');
  if (typeof r.subject !== 'string') return undefined;
  if (!strings(r.groups) || r.groups.length === 0 || !strings(r.roles) || !strings(r.scopes)) return undefined;
  return { id: r.id, name: r.name, groups: r.groups, subject: r.subject, roles: r.roles, scopes: r.scopes, createdAt: r.createdAt, sha256: r.sha256 };
}
