/**
 * Bearer JWTs of the issuers the manifest names (`auth.jwt`). Every JOSE
 * operation is jose's; this module decides which issuer, which keys and which
 * rules apply, and turns a failure into a reason a caller may read.
 *
 * The issuer is picked by the token's own (unverified) `iss` among those the
 * route accepts, and the token is then held to that issuer's keys and
 * algorithms only: an issuer's algorithms are pinned and must fit its keys
 * (HS* with a shared secret, the others with public keys), so neither
 * `alg: none` nor an HS256 token "signed" with a public key as the secret
 * gets through.
 */
import { stat, readFile } from 'node:fs/promises';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, errors, importSPKI, jwtVerify, type CryptoKey, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import { BerthError } from '../errors.js';
import type { JwtIssuerSpec, SecretRef } from '../manifest/types.js';
import type { Identity } from './identity.js';
import { describeSecret, readSecret } from './secret-ref.js';

export { bearerToken } from './bearer.js';

export type JwtCheck = { ok: true; identity: Identity; issuerName: string } | { ok: false; reason: string; code: 'BERTH_ERR_UNAUTHENTICATED' };

export interface JwtVerifierDeps {
  /** Reads a shared secret (`keys.kind: secret`). Default: the environment variable or file. */
  loadSecret?: (ref: SecretRef) => Promise<Uint8Array>;
  /** Token times are checked against it, and a JWKS file's mtime at most once a second of it. */
  clock?: Clock;
  /** Told what is the node's problem rather than the caller's: a JWKS that cannot be fetched, a JWKS file that no longer reads. */
  onError?: (err: unknown, issuerName: string) => void;
}

/** An HTTP JWKS fetch that has not answered by then is abandoned (the token is refused; the next one tries again). */
const JWKS_TIMEOUT_MS = 5_000;
/** A JWKS file's mtime is looked at no more often than this. */
const FILE_CHECK_EVERY_MS = 1_000;
/** RFC 7518 §3.2: an HMAC key at least as long as the hash. */
const MIN_SECRET_BYTES = 32;

const HMAC_ALGORITHMS: ReadonlySet<string> = new Set(['HS256', 'HS384', 'HS512']);
const PUBLIC_KEY_ALGORITHMS: ReadonlySet<string> = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']);

interface Issuer {
  spec: JwtIssuerSpec;
  key: JWTVerifyGetKey | Uint8Array;
  /** jose's options, less the time (taken from the clock per token). */
  options: JWTVerifyOptions;
}

const NONE: readonly string[] = Object.freeze([]);

/** Checks bearer JWTs against the manifest's issuers. Build it once per manifest; it holds no handle. */
export class JwtVerifier {
  /** By `iss`: more than one issuer entry may share an `iss` (with other audiences, say). */
  readonly #byIss: ReadonlyMap<string, readonly Issuer[]>;
  readonly #clock: Clock;
  readonly #onError: (err: unknown, issuerName: string) => void;

  private constructor(issuers: readonly Issuer[], deps: JwtVerifierDeps) {
    const byIss = new Map<string, Issuer[]>();
    for (const issuer of issuers) byIss.set(issuer.spec.issuer, [...(byIss.get(issuer.spec.issuer) ?? []), issuer]);
    this.#byIss = byIss;
    this.#clock = deps.clock ?? systemClock;
    this.#onError = deps.onError ?? (() => undefined);
  }

  /**
   * Reads every issuer's keys (secrets, PEM files, JWKS files; an HTTP JWKS
   * is fetched on the first token that needs it). Throws BERTH_ERR_AUTH_CONFIG
   * naming the issuer and what is wrong.
   */
  static async create(issuers: readonly JwtIssuerSpec[], deps: JwtVerifierDeps = {}): Promise<JwtVerifier> {
    const clock = deps.clock ?? systemClock;
    const loadSecret = deps.loadSecret ?? readSecret;
    const onError = deps.onError ?? (() => undefined);
    const compiled: Issuer[] = [];
    for (const spec of issuers) {
      checkAlgorithms(spec);
      compiled.push({ spec, key: await keyOf(spec, { loadSecret, clock, onError }), options: optionsOf(spec) });
    }
    return new JwtVerifier(compiled, deps);
  }

  /**
   * Verifies `token` against the issuer its `iss` names, if that issuer is
   * one of `allowed` (issuer names). The reason of a refusal says what was
   * wrong and never echoes the token or its claims.
   */
  async verify(token: string, allowed: readonly string[]): Promise<JwtCheck> {
    let claims: JWTPayload;
    try {
      claims = decodeJwt(token);
    } catch {
      return refuse('malformed token');
    }
    if (typeof claims.iss !== 'string') return refuse('token has no iss claim');
    const issuer = this.#byIss.get(claims.iss)?.find((i) => allowed.includes(i.spec.name));
    if (issuer === undefined) return refuse('issuer not accepted');
    try {
      const now = this.#clock.now();
      const { payload } = await jwtVerify(token, issuer.key, { ...issuer.options, currentDate: new Date(now) });
      // jose checks `iat` only against a maximum age; a token from the future is refused here.
      if (typeof payload.iat === 'number' && payload.iat * 1000 > now + issuer.spec.clockSkewMs) return refuse('token issued in the future');
      return { ok: true, identity: identityOf(payload, issuer.spec), issuerName: issuer.spec.name };
    } catch (err) {
      const reason = reasonOf(err, issuer.spec.name);
      if (reason === undefined) {
        this.#onError(err, issuer.spec.name);
        return refuse(`the keys of issuer ${issuer.spec.name} are unavailable`);
      }
      return refuse(reason);
    }
  }

  /** Nothing to release (no watcher, no timer, no socket held between fetches); here so that owners need not know. */
  close(): void {}
}

function refuse(reason: string): JwtCheck {
  return { ok: false, reason, code: 'BERTH_ERR_UNAUTHENTICATED' };
}

function checkAlgorithms(spec: JwtIssuerSpec): void {
  const problem = (text: string): BerthError => new BerthError('BERTH_ERR_AUTH_CONFIG', `auth.jwt.${spec.name}: ${text}`);
  if (spec.algorithms.length === 0) throw problem('algorithms is empty: name the algorithms the issuer signs with');
  const secret = spec.keys.kind === 'secret';
  for (const alg of spec.algorithms) {
    if (secret && !HMAC_ALGORITHMS.has(alg)) throw problem(`algorithm ${alg} does not fit a shared secret (HS256, HS384 or HS512)`);
    if (!secret && !PUBLIC_KEY_ALGORITHMS.has(alg)) {
      throw problem(HMAC_ALGORITHMS.has(alg) ? `algorithm ${alg} needs keys.secret, not public keys` : `algorithm ${JSON.stringify(alg)} is not supported`);
    }
  }
}

function optionsOf(spec: JwtIssuerSpec): JWTVerifyOptions {
  return {
    algorithms: [...spec.algorithms],
    issuer: spec.issuer,
    ...(spec.audience.length > 0 ? { audience: [...spec.audience] } : {}),
    requiredClaims: ['exp'],
    clockTolerance: spec.clockSkewMs / 1000,
  };
}

interface KeyDeps {
  loadSecret: (ref: SecretRef) => Promise<Uint8Array>;
  clock: Clock;
  onError: (err: unknown, issuerName: string) => void;
}

async function keyOf(spec: JwtIssuerSpec, deps: KeyDeps): Promise<JWTVerifyGetKey | Uint8Array> {
  const keys = spec.keys;
  const problem = (text: string, cause?: unknown): BerthError => new BerthError('BERTH_ERR_AUTH_CONFIG', `auth.jwt.${spec.name}: ${text}`, { cause });
  switch (keys.kind) {
    case 'jwks':
      try {
        return createRemoteJWKSet(new URL(keys.url), { cacheMaxAge: keys.cacheMaxAgeMs, cooldownDuration: keys.cooldownMs, timeoutDuration: JWKS_TIMEOUT_MS });
      } catch (err) {
        throw problem(`the JWKS settings cannot be used: ${err instanceof Error ? err.message : String(err)}`, err);
      }
    case 'jwks-file': {
      const file = await JwksFile.open(keys.file, deps.clock, (err) => deps.onError(err, spec.name)).catch((err: unknown) => {
        throw problem(`the JWKS file ${keys.file} cannot be used: ${err instanceof Error ? err.message : String(err)}`, err);
      });
      return (header, token) => file.key(header, token);
    }
    case 'public-key': {
      let pem: string;
      try {
        pem = await readFile(keys.file, 'utf8');
      } catch (err) {
        throw problem(`the public key file ${keys.file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err);
      }
      // One import per algorithm: a CryptoKey is bound to the algorithm it was imported for.
      const byAlg = new Map<string, CryptoKey>();
      for (const alg of spec.algorithms) {
        try {
          byAlg.set(alg, await importSPKI(pem, alg));
        } catch (err) {
          throw problem(`the public key file ${keys.file} holds no ${alg} public key (PEM, SPKI): ${err instanceof Error ? err.message : String(err)}`, err);
        }
      }
      return (header) => {
        const key = byAlg.get(header.alg ?? '');
        // Unreachable: jose refuses an algorithm outside `algorithms` before asking for a key.
        if (key === undefined) throw new errors.JOSEAlgNotAllowed('"alg" (Algorithm) Header Parameter value not allowed');
        return key;
      };
    }
    case 'secret': {
      const secret = await deps.loadSecret(keys.secret);
      if (secret.length < MIN_SECRET_BYTES) throw problem(`the ${describeSecret(keys.secret)} holds ${secret.length} bytes; an HMAC secret needs at least ${MIN_SECRET_BYTES}`);
      return secret;
    }
  }
}

/**
 * A JWKS document in a file, re-read when the file changes: its mtime, size
 * and inode are looked at on a token's arrival, at most once a second. No
 * watcher: nothing to leak, and a file replaced by rename (as config tools
 * do) is seen like one rewritten in place. A file that stops reading keeps
 * the keys it had, and the failure is reported.
 */
class JwksFile {
  readonly #path: string;
  readonly #clock: Clock;
  readonly #onError: (err: unknown) => void;
  #keys: ReturnType<typeof createLocalJWKSet>;
  #version: string;
  #checkedAt: number;

  private constructor(path: string, clock: Clock, onError: (err: unknown) => void, keys: ReturnType<typeof createLocalJWKSet>, version: string) {
    this.#path = path;
    this.#clock = clock;
    this.#onError = onError;
    this.#keys = keys;
    this.#version = version;
    this.#checkedAt = clock.now();
  }

  static async open(path: string, clock: Clock, onError: (err: unknown) => void): Promise<JwksFile> {
    const { keys, version } = await JwksFile.#read(path);
    return new JwksFile(path, clock, onError, keys, version);
  }

  static async #read(path: string): Promise<{ keys: ReturnType<typeof createLocalJWKSet>; version: string }> {
    const info = await stat(path);
    const keys = createLocalJWKSet(JSON.parse(await readFile(path, 'utf8')) as Parameters<typeof createLocalJWKSet>[0]);
    return { keys, version: versionOf(info) };
  }

  async key(...args: Parameters<ReturnType<typeof createLocalJWKSet>>): Promise<CryptoKey> {
    const now = this.#clock.now();
    if (now - this.#checkedAt >= FILE_CHECK_EVERY_MS) {
      this.#checkedAt = now;
      await this.#reload();
    }
    return this.#keys(...args);
  }

  async #reload(): Promise<void> {
    try {
      if (versionOf(await stat(this.#path)) === this.#version) return;
      const { keys, version } = await JwksFile.#read(this.#path);
      this.#keys = keys;
      this.#version = version;
    } catch (err) {
      this.#onError(new Error(`the JWKS file ${this.#path} cannot be re-read; its previous keys stay in use: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
    }
  }
}

function versionOf(info: { mtimeMs: number; size: number; ino: number }): string {
  return `${info.mtimeMs}:${info.size}:${info.ino}`;
}

/** What was wrong with the token, for the caller; undefined when the fault is the node's (its keys cannot be had). */
function reasonOf(err: unknown, issuerName: string): string | undefined {
  if (err instanceof errors.JWTExpired) return 'token expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return `token has no ${err.claim} claim`;
    switch (err.claim) {
      case 'aud':
        return 'audience not accepted';
      case 'nbf':
        return 'token not yet valid';
      case 'iss':
        return 'issuer not accepted';
      default:
        return `the ${err.claim} claim is invalid`;
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return `algorithm not allowed for issuer ${issuerName}`;
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature invalid';
  if (err instanceof errors.JWKSNoMatchingKey) return 'unknown key id';
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'malformed token';
  if (err instanceof errors.JOSENotSupported) return 'algorithm or key type not supported';
  return undefined;
}

function identityOf(payload: JWTPayload, spec: JwtIssuerSpec): Identity {
  return {
    kind: 'jwt',
    subject: typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : null,
    issuer: typeof payload.iss === 'string' ? payload.iss : null,
    roles: listOf(claimAt(payload, spec.rolesClaim)),
    scopes: listOf(claimAt(payload, spec.scopesClaim)),
    claims: payload,
  };
}

/**
 * A claim by name; when there is no claim of that exact name and the name
 * has dots, the path through nested objects (`realm_access.roles`, where
 * Keycloak keeps roles). An exact name wins: namespaced claims such as
 * `https://example.com/roles` hold dots too.
 */
function claimAt(payload: JWTPayload, name: string): unknown {
  if (Object.hasOwn(payload, name)) return payload[name];
  if (!name.includes('.')) return undefined;
  let value: unknown = payload;
  for (const part of name.split('.')) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** A list claim (`scp`, `roles`) or a space-separated one (`scope`); anything else is no list. */
function listOf(value: unknown): readonly string[] {
  if (typeof value === 'string') return value.split(' ').filter((item) => item !== '');
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === 'string' && item !== '');
  return NONE;
}
