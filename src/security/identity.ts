/**
 * The caller the gateway authenticated, and how an instance learns who it is:
 * `x-berth-*` headers the gateway sets on every request it forwards, signed
 * with HMAC-SHA256 under the node's identity key. The gateway strips every
 * `x-berth-*` header a client sends (isIdentityHeader), so the headers an
 * instance receives are the gateway's; the signature lets an instance that
 * can also be reached around the gateway tell them from a forgery, and the
 * time in it bounds a replay to `maxAgeSeconds`.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../errors.js';
import type { SecretRef } from '../manifest/types.js';
import { describeSecret, readSecret } from './secret-ref.js';

/** Who made a request, as the gateway established it. Immutable: one object may serve many requests. */
export interface Identity {
  kind: 'jwt' | 'apikey' | 'anonymous';
  /** JWT `sub`, or the API key's subject; null when anonymous or the token has none. */
  subject: string | null;
  /** JWT `iss`; null for API keys and anonymous callers. */
  issuer: string | null;
  roles: readonly string[];
  scopes: readonly string[];
  /** The JWT's claims (an API key's: `sub`, `key_id`, `key_name`); never sent to the instance. */
  claims: Readonly<Record<string, unknown>>;
}

const NONE: readonly string[] = Object.freeze([]);

export const ANONYMOUS: Identity = Object.freeze({ kind: 'anonymous', subject: null, issuer: null, roles: NONE, scopes: NONE, claims: Object.freeze({}) });

/** The identity headers, lower case. */
export const IDENTITY_HEADERS = {
  auth: 'x-berth-auth',
  subject: 'x-berth-subject',
  issuer: 'x-berth-issuer',
  roles: 'x-berth-roles',
  scopes: 'x-berth-scopes',
  time: 'x-berth-identity-time',
  signature: 'x-berth-signature',
} as const;

/** The environment variable that gives an instance the identity key (base64url). */
export const IDENTITY_KEY_ENV = 'BERTH_IDENTITY_KEY';

/** The file in the data dir holding the generated identity key (base64url), when the manifest names none. */
export const IDENTITY_KEY_FILE = 'identity-key';

const IDENTITY_KEY_BYTES = 32;

/**
 * Whether the gateway must drop this header from an incoming request: every
 * `x-berth-*` header is Berth's to set, so a client can never forge one, now
 * or when a later version adds one. `x-berth-timeout-ms` is the exception: a
 * client may ask for a shorter deadline (src/gateway/headers.ts).
 */
export function isIdentityHeader(lowerName: string): boolean {
  return lowerName.startsWith('x-berth-') && lowerName !== 'x-berth-timeout-ms';
}

/** Visible ASCII less `%` (the escape) and `,` (the roles' separator): such a value is sent as it is. */
const PLAIN = /^[\x21-\x24\x26-\x2b\x2d-\x7e]*$/;

/**
 * A header value for any string: itself when PLAIN, else percent-encoded
 * (encodeURIComponent). So a `sub` holding CR, LF, spaces or non-ASCII can
 * neither break the header block nor be refused by Node, and decoding is
 * always decodeURIComponent: a plain value has no `%` to decode.
 */
function encodeValue(value: string): string {
  if (PLAIN.test(value)) return value;
  // Through UTF-8 and back: a lone surrogate (JSON allows one) becomes U+FFFD instead of making encodeURIComponent throw.
  return encodeURIComponent(Buffer.from(value, 'utf8').toString('utf8'));
}

/** An identity's header values, encoded once: API key identities are reused for every request. */
interface Encoded {
  auth: string;
  subject: string;
  issuer: string;
  roles: string;
  scopes: string;
  /** The canonical string's lines after the path. */
  tail: string;
}

const encodedCache = new WeakMap<Identity, Encoded>();

function encoded(identity: Identity): Encoded {
  let e = encodedCache.get(identity);
  if (e === undefined) {
    const subject = identity.subject === null ? '' : encodeValue(identity.subject);
    const issuer = identity.issuer === null ? '' : encodeValue(identity.issuer);
    // Empty items are dropped: a leading or trailing separator could be trimmed as whitespace on the way.
    const roles = identity.roles.filter(nonEmpty).map(encodeValue).join(',');
    const scopes = identity.scopes.filter(nonEmpty).map(encodeValue).join(' ');
    e = { auth: identity.kind, subject, issuer, roles, scopes, tail: canonicalTail(identity.kind, subject, issuer, roles, scopes) };
    encodedCache.set(identity, e);
  }
  return e;
}

const nonEmpty = (item: string): boolean => item !== '';

function canonicalTail(auth: string, subject: string, issuer: string, roles: string, scopes: string): string {
  return `${auth}\n${subject}\n${issuer}\n${roles}\n${scopes}`;
}

/**
 * `v1=` and the base64url HMAC-SHA256 of the canonical string: `v1`, time,
 * method, path, auth, subject, issuer, roles, scopes, joined with "\n", each
 * as sent. Only the path may hold a "\n" (no header value can), and the
 * fields around it are fixed in number, so no two requests share a string.
 */
function signature(key: Buffer, time: string, method: string, path: string, tail: string): Buffer {
  return createHmac('sha256', key).update(`v1\n${time}\n${method}\n${path}\n`).update(tail).digest();
}

export interface SignOptions {
  key: Buffer;
  method: string;
  /** The path the instance receives, query included. */
  path: string;
  /** Unix time, in seconds. */
  nowSeconds: number;
}

/**
 * The identity headers for one forwarded request, as a flat `[name, value, …]`
 * list. Subject, issuer, roles and scopes are omitted when empty. Values that
 * are not visible ASCII (and any holding `%`, or `,` for a role) are
 * percent-encoded with encodeURIComponent; verifyIdentity decodes them.
 */
export function identityHeaders(identity: Identity, options: SignOptions): string[] {
  const e = encoded(identity);
  const time = String(Math.floor(options.nowSeconds));
  const out = [IDENTITY_HEADERS.auth, e.auth];
  if (e.subject !== '') out.push(IDENTITY_HEADERS.subject, e.subject);
  if (e.issuer !== '') out.push(IDENTITY_HEADERS.issuer, e.issuer);
  if (e.roles !== '') out.push(IDENTITY_HEADERS.roles, e.roles);
  if (e.scopes !== '') out.push(IDENTITY_HEADERS.scopes, e.scopes);
  out.push(IDENTITY_HEADERS.time, time, IDENTITY_HEADERS.signature, `v1=${signature(options.key, time, options.method, options.path, e.tail).toString('base64url')}`);
  return out;
}

export interface VerifyOptions extends SignOptions {
  /** How far the identity's time may be from now, either way. Default 300. */
  maxAgeSeconds?: number;
}

export type IdentityCheck = { ok: true; identity: Identity } | { ok: false; reason: string };

const KINDS: ReadonlySet<string> = new Set<Identity['kind']>(['jwt', 'apikey', 'anonymous']);
const TIME = /^[0-9]{1,15}$/;
const SIGNATURE = /^v1=([A-Za-z0-9_-]{43})$/;

/**
 * Checks the identity headers of a request an instance received against the
 * method and path it received (`req.method`, `req.url`). The signature is
 * compared in constant time; a time more than `maxAgeSeconds` from now, in
 * the past or the future, is refused. The identity has no claims: they are
 * not sent.
 */
export function verifyIdentity(headers: Readonly<Record<string, string | string[] | undefined>>, options: VerifyOptions): IdentityCheck {
  const auth = headers[IDENTITY_HEADERS.auth];
  const time = headers[IDENTITY_HEADERS.time];
  const given = headers[IDENTITY_HEADERS.signature];
  const subject = headers[IDENTITY_HEADERS.subject] ?? '';
  const issuer = headers[IDENTITY_HEADERS.issuer] ?? '';
  const roles = headers[IDENTITY_HEADERS.roles] ?? '';
  const scopes = headers[IDENTITY_HEADERS.scopes] ?? '';
  if (auth === undefined || given === undefined) return { ok: false, reason: 'no identity headers: the request did not come through a Berth gateway' };
  if (typeof auth !== 'string' || typeof time !== 'string' || typeof given !== 'string' || typeof subject !== 'string' || typeof issuer !== 'string' || typeof roles !== 'string' || typeof scopes !== 'string') {
    return { ok: false, reason: 'an identity header is repeated or missing' };
  }
  if (!KINDS.has(auth)) return { ok: false, reason: 'unknown x-berth-auth' };
  if (!TIME.test(time)) return { ok: false, reason: 'malformed x-berth-identity-time' };
  const match = SIGNATURE.exec(given);
  if (match === null) return { ok: false, reason: 'malformed x-berth-signature (expected v1=<base64url HMAC-SHA256>)' };
  const presented = Buffer.from(match[1]!, 'base64url');
  const expected = signature(options.key, time, options.method, options.path, canonicalTail(auth, subject, issuer, roles, scopes));
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return { ok: false, reason: 'signature invalid' };
  const age = options.nowSeconds - Number(time);
  const maxAge = options.maxAgeSeconds ?? 300;
  if (age > maxAge) return { ok: false, reason: `identity is stale: signed ${Math.floor(age)}s ago, more than ${maxAge}s` };
  if (age < -maxAge) return { ok: false, reason: `identity is from the future: signed ${Math.floor(-age)}s ahead, more than ${maxAge}s` };
  try {
    return {
      ok: true,
      identity: {
        kind: auth as Identity['kind'],
        subject: subject === '' ? null : decodeURIComponent(subject),
        issuer: issuer === '' ? null : decodeURIComponent(issuer),
        roles: decodeList(roles, ','),
        scopes: decodeList(scopes, ' '),
        claims: {},
      },
    };
  } catch {
    // Only a gateway with the key could have signed a value that does not decode.
    return { ok: false, reason: 'an identity header does not decode' };
  }
}

function decodeList(text: string, separator: string): readonly string[] {
  if (text === '') return NONE;
  return text
    .split(separator)
    .filter((item) => item !== '')
    .map((item) => decodeURIComponent(item));
}

/**
 * The identity key: the secret the manifest names (`auth.identityKey`:
 * base64 or base64url of at least 32 bytes, else at least 32 raw bytes), or,
 * when it names none, a 32-byte key generated once into
 * `<dataDir>/identity-key` (base64url, mode 0600) and read back on every
 * later start, so instances keep verifying across restarts of the node.
 */
export async function loadIdentityKey(ref: SecretRef | null, dataDir: string): Promise<Buffer> {
  if (ref !== null) return keyFrom(await readSecret(ref), `the ${describeSecret(ref)} (auth.identityKey)`);
  const path = join(dataDir, IDENTITY_KEY_FILE);
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new BerthError('BERTH_ERR_AUTH_CONFIG', `the identity key file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  }
  // A damaged key file is refused rather than replaced: replacing it would silently break every instance that verifies.
  if (text !== undefined) return keyFrom(Buffer.from(text.trim(), 'utf8'), `the identity key file ${path}`);
  const key = randomBytes(IDENTITY_KEY_BYTES);
  // Created 0600 under a temporary name and renamed into place: never readable by others, never half written.
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temp, `${key.toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  return key;
}

const BASE64 = /^(?:[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+)$/;

function keyFrom(bytes: Buffer, where: string): Buffer {
  const text = bytes.toString('latin1').trim();
  if (BASE64.test(text)) {
    const decoded = Buffer.from(text, text.includes('+') || text.includes('/') ? 'base64' : 'base64url');
    if (decoded.length >= IDENTITY_KEY_BYTES) return decoded;
  }
  if (bytes.length >= IDENTITY_KEY_BYTES) return bytes;
  throw new BerthError('BERTH_ERR_AUTH_CONFIG', `${where} holds ${bytes.length} bytes; an identity key needs at least ${IDENTITY_KEY_BYTES} (base64 or base64url of them, or raw)`);
}
