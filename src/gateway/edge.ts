/**
 * The edge policies of a request, between the route and the policy chain
 * (docs/security.md):
 *
 *   methods (405) → body size (413) → rate limit per client address (429)
 *   → authentication (401) → authorization (403) → rate limit per subject (429)
 *
 * Cheap refusals come first, so a flood is turned away before it costs a
 * signature check. Each service's edge is compiled once per policy change
 * (route globs, rules); a request only looks things up.
 */
import type { IncomingMessage } from 'node:http';
import type { ErrorCode } from '../errors.js';
import type { AuthSpec, EdgePolicySpec, RateRule, RouteSpec } from '../manifest/types.js';
import type { ApiKeys } from '../security/api-keys.js';
import { compileRules, globToRegExp, type Authorizer } from '../security/authorize.js';
import { rateLimitKey } from '../security/client-ip.js';
import { ANONYMOUS, type Identity } from '../security/identity.js';
import { bearerToken, type JwtVerifier } from '../security/jwt.js';
import { rateLimitHeaders, type RateDecision, type RateLimitStore } from '../security/rate-limit.js';

/** One set of edge policies, ready for requests. */
export interface CompiledEdge {
  readonly spec: EdgePolicySpec;
  /** Namespace of this edge's rate-limit buckets: the service, or the service and the route. */
  readonly bucket: string;
  readonly methods: ReadonlySet<string> | null;
  /** The `Allow` header of a 405. */
  readonly allow: string;
  readonly authorizer: Authorizer | null;
}

/** A service's edge: its routes in manifest order, then the service's own policies. */
export class ServiceEdge {
  readonly #routes: { pattern: RegExp; edge: CompiledEdge }[];
  readonly #fallback: CompiledEdge;

  constructor(bucket: string, edge: EdgePolicySpec, routes: readonly RouteSpec[]) {
    this.#fallback = compile(bucket, edge);
    this.#routes = routes.map((route, i) => ({ pattern: globToRegExp(route.path), edge: compile(`${bucket}#${i}`, route.edge) }));
  }

  /** The edge for a path the instance would see (no query string). */
  forPath(path: string): CompiledEdge {
    for (const route of this.#routes) if (route.pattern.test(path)) return route.edge;
    return this.#fallback;
  }
}

function compile(bucket: string, spec: EdgePolicySpec): CompiledEdge {
  return {
    spec,
    bucket,
    methods: spec.methods === null ? null : new Set(spec.methods),
    allow: spec.methods === null ? '' : spec.methods.join(', '),
    authorizer: spec.auth === null ? null : compileRules(spec.authorize),
  };
}

/** Why the edge turned a request away: answered as JSON with the code, plus these headers. */
export interface Refusal {
  code: ErrorCode;
  message: string;
  headers?: Record<string, string>;
}

/** A request the edge let through, and who sent it (null when the route needs no authentication); a refusal after authentication (403, 429 per subject) says who too, for the access log. */
export type Admission = { ok: true; identity: Identity | null } | { ok: false; refusal: Refusal; identity?: Identity };

export interface EdgeGuardDeps {
  limiter: RateLimitStore;
  /** null when the manifest declares no JWT issuer. */
  jwt: Pick<JwtVerifier, 'verify'> | null;
  apiKeys: Pick<ApiKeys, 'verify'> | null;
  /** Wall-clock milliseconds (a shared limiter store compares across nodes). */
  now: () => number;
}

const API_KEY_HEADER = 'x-api-key';

/** Runs the edge policies of one request. Stateless but for the limiter's buckets. */
export class EdgeGuard {
  readonly #deps: EdgeGuardDeps;

  constructor(deps: EdgeGuardDeps) {
    this.#deps = { ...deps };
  }

  /** New JWT issuers' keys after a reload; requests already verifying finish with the old ones. */
  setJwt(jwt: EdgeGuardDeps['jwt']): void {
    this.#deps.jwt = jwt;
  }

  /**
   * The checks that need no identity: method, a declared body size, and the
   * rate per client address (last, so a request refused for its shape does not
   * spend a token). Synchronous with the embedded limiter store; a shared
   * store may answer with a promise.
   */
  precheck(edge: CompiledEdge, method: string, clientIp: string, contentLength: number): Refusal | null | Promise<Refusal | null> {
    if (edge.methods !== null && !edge.methods.has(method) && !(method === 'HEAD' && edge.methods.has('GET'))) {
      return { code: 'BERTH_ERR_METHOD_NOT_ALLOWED', message: `${method} is not allowed here (allowed: ${edge.allow})`, headers: { allow: edge.allow } };
    }
    if (contentLength > edge.spec.maxBodyBytes) {
      return { code: 'BERTH_ERR_BODY_TOO_LARGE', message: `the request body (${contentLength} bytes) is larger than the ${edge.spec.maxBodyBytes} bytes allowed here` };
    }
    const rule = edge.spec.rateLimit.perIp;
    if (rule === null) return null;
    return this.#limit(`${edge.bucket}|ip|${rateLimitKey(clientIp)}`, rule, 'client address');
  }

  /**
   * Who sent the request, whether a rule admits them, and the rate per
   * subject. Synchronous unless a JWT must be verified (or the limiter store
   * is remote).
   */
  authenticate(edge: CompiledEdge, req: IncomingMessage, group: string, path: string): Admission | Promise<Admission> {
    const auth = edge.spec.auth;
    if (auth === null) return { ok: true, identity: null };
    const found = this.#identify(auth, req, group);
    if (found instanceof Promise) return found.then((identity) => this.#admit(edge, identity, req.method ?? '', path));
    return this.#admit(edge, found, req.method ?? '', path);
  }

  #identify(auth: AuthSpec, req: IncomingMessage, group: string): Identity | Refusal | Promise<Identity | Refusal> {
    const key = req.headers[API_KEY_HEADER];
    const token = bearerToken(req.headers.authorization);
    if (typeof key === 'string' && auth.apiKey && this.#deps.apiKeys) {
      const verdict = this.#deps.apiKeys.verify(key, group);
      if (verdict.ok) return verdict.identity;
      return verdict.reason === 'not-for-group'
        ? { code: 'BERTH_ERR_FORBIDDEN', message: `this API key is not valid for group ${group}` }
        : unauthenticated(auth, 'the API key is not valid (unknown or revoked)', true);
    }
    if (token !== undefined && auth.jwt.length > 0 && this.#deps.jwt) {
      return this.#deps.jwt.verify(token, auth.jwt).then((verdict) => (verdict.ok ? verdict.identity : unauthenticated(auth, verdict.reason, true)));
    }
    if (key !== undefined || req.headers.authorization !== undefined) return unauthenticated(auth, 'the credentials are not of a kind this route accepts', true);
    if (auth.anonymous) return ANONYMOUS;
    return unauthenticated(auth, 'credentials are required', false);
  }

  #admit(edge: CompiledEdge, found: Identity | Refusal, method: string, path: string): Admission | Promise<Admission> {
    if ('code' in found) return { ok: false, refusal: found };
    const verdict = edge.authorizer!.check(found, method, path);
    if (!verdict.ok) return { ok: false, refusal: { code: 'BERTH_ERR_FORBIDDEN', message: verdict.reason }, identity: found };
    const rule = edge.spec.rateLimit.perSubject;
    if (rule === null || found.subject === null || found.kind === 'anonymous') return { ok: true, identity: found };
    const limited = this.#limit(`${edge.bucket}|sub|${found.kind}|${found.issuer ?? ''}|${found.subject}`, rule, 'caller');
    if (limited instanceof Promise) return limited.then((refusal) => (refusal ? { ok: false, refusal, identity: found } : { ok: true, identity: found }));
    return limited ? { ok: false, refusal: limited, identity: found } : { ok: true, identity: found };
  }

  #limit(key: string, rule: RateRule, who: string): Refusal | null | Promise<Refusal | null> {
    const decision = this.#deps.limiter.take(key, rule, this.#deps.now());
    if (decision instanceof Promise) return decision.then((d) => refusalOf(d, rule, who));
    return refusalOf(decision, rule, who);
  }
}

function refusalOf(decision: RateDecision, rule: RateRule, who: string): Refusal | null {
  if (decision.allowed) return null;
  return { code: 'BERTH_ERR_RATE_LIMITED', message: `too many requests from this ${who}: ${formatRate(rule)}`, headers: rateLimitHeaders(decision, rule) };
}

function formatRate(rule: RateRule): string {
  return `${Number(rule.ratePerSecond.toFixed(3))} a second, bursts of ${rule.burst}`;
}

/** 401, with the challenge a client needs to know what to send (RFC 6750 for bearer tokens: an error only when a token was presented). */
function unauthenticated(auth: AuthSpec, reason: string, presented: boolean): Refusal {
  const challenges: string[] = [];
  if (auth.jwt.length > 0) challenges.push(presented ? 'Bearer realm="berth", error="invalid_token"' : 'Bearer realm="berth"');
  if (auth.apiKey) challenges.push(`ApiKey header="${API_KEY_HEADER}"`);
  return { code: 'BERTH_ERR_UNAUTHENTICATED', message: reason, headers: { 'www-authenticate': challenges.join(', ') } };
}
