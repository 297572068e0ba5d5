/**
 * The manifest after validation and normalization: every default applied,
 * every duration in milliseconds, every path absolute. The supervisor, the
 * health checks and (later) the gateway consume these types, never raw YAML.
 */
import type { BreakerConfig } from '../resilience/circuit-breaker.js';
import type { OutlierConfig } from '../resilience/outlier-detector.js';

export type RestartPolicy = 'always' | 'on-failure' | 'never';

export type CheckSpec =
  | { kind: 'http'; path: string; method: 'GET' | 'HEAD'; /** Port to probe; defaults to the instance's PORT. */ port?: number; headers: Record<string, string> }
  | { kind: 'tcp'; port?: number }
  | { kind: 'command'; command: string }
  | { kind: 'none' };

export interface HealthSpec {
  check: CheckSpec;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive successes that make an instance passing (rise). */
  healthyThreshold: number;
  /** Consecutive failures that make an instance critical (fall). */
  unhealthyThreshold: number;
  /** After a (re)start, failures inside this window do not count towards critical. */
  startPeriodMs: number;
  /** An instance critical for this long is restarted (if its restart policy allows). */
  restartAfterMs: number;
}

export interface RestartSpec {
  policy: RestartPolicy;
  /** First backoff delay; each further unstable restart multiplies it by `backoffFactor`, capped at `backoffMaxMs`, with jitter. */
  backoffInitialMs: number;
  backoffMaxMs: number;
  backoffFactor: number;
  /** A process that ran at least this long was stable: its exit resets the backoff and the crash-loop count. */
  stableAfterMs: number;
  /** Unstable restarts in a row after which the instance is `failed` and not restarted again. */
  maxRestarts: number;
}

export interface StopSpec {
  signal: NodeJS.Signals;
  /** How long in-flight requests may take to finish once the instance is draining. */
  drainTimeoutMs: number;
  /** Between the stop signal and SIGKILL to the instance's whole process group. */
  stopTimeoutMs: number;
}

/** How to launch one process: argv is run directly, or through `/bin/sh -c` when `shell` is set. */
export interface CommandSpec {
  /** The command line as written (for display). */
  line: string;
  file: string;
  args: string[];
  shell: boolean;
}

// ---------------------------------------------------------------- isolation
// docs/isolation.md: what is isolated and how, per platform, and what is not.

/** Kernel-enforced limits of one instance; null: no limit. */
export interface ResourcesSpec {
  /** Memory (RSS + page cache charged to it), bytes: past it the kernel OOM-kills the instance. */
  memoryBytes: number | null;
  /** CPU time, in cores (0.5: half of one core's time per period). */
  cpu: number | null;
  /** Processes and threads at once (a fork bomb stops here). */
  pids: number | null;
  /** Open file descriptors (RLIMIT_NOFILE). */
  openFiles: number | null;
}

/** The user an instance runs as: a name (looked up when the node starts) or numeric ids. */
export type RunAsSpec = { name: string } | { uid: number; gid: number };

export interface IsolationSpec {
  /** null: as Berth's own user. */
  user: RunAsSpec | null;
  resources: ResourcesSpec;
  /**
   * A filesystem sandbox (bubblewrap): read-only root, private /tmp, Berth's
   * data dir hidden, one writable data dir for the service
   * (`<dataDir>/services/<group>/<service>`). null: off.
   */
  sandbox: { writable: string[] } | null;
}

/** No user, no limit, no sandbox: an instance as a plain child process. */
export const NO_ISOLATION: IsolationSpec = Object.freeze({
  user: null,
  resources: Object.freeze({ memoryBytes: null, cpu: null, pids: null, openFiles: null }),
  sandbox: null,
});

/** One version of one service: the unit the supervisor runs `replicas` instances of. */
export interface VersionSpec {
  /** `group/service@version`: unique in a node. */
  key: string;
  group: string;
  service: string;
  version: string;
  /** Whether this is the service's stable version (the gateway's default route). */
  stable: boolean;
  command: CommandSpec;
  /** Absolute working directory. */
  cwd: string;
  env: Record<string, string>;
  /** Variables whose values are secrets given by reference: read at each start, never logged, shown or stored. */
  secretEnv: Record<string, SecretRef>;
  replicas: number;
  isolation: IsolationSpec;
  health: HealthSpec;
  restart: RestartSpec;
  stop: StopSpec;
}

export type EndpointSpec =
  | { kind: 'path'; prefix: string }
  | { kind: 'host'; host: string }
  | { kind: 'port'; port: number };

/** How the gateway spreads requests over a version's instances. */
export type BalancerSpec =
  | { kind: 'peak-ewma' }
  | { kind: 'round-robin' }
  | { kind: 'least-request' }
  | { kind: 'hash'; header?: string; cookie?: string };
// (src/gateway/balancers/balancer.ts re-exports this one: the manifest is the lower layer.)

export interface RetrySpec {
  /** Retries after the first try (so at most attempts + 1 tries). */
  attempts: number;
  /** One try's limit, to the response's headers; a try past it is abandoned and may be retried. */
  tryTimeoutMs: number;
  /** Failures that are retried: nothing reached the instance (connect), the connection broke before a response (reset), a try timed out, or these statuses. */
  on: { connect: boolean; reset: boolean; timeout: boolean; statuses: readonly number[] };
  /** Methods that may be retried (a request with a body never is: it is streamed, not kept). */
  methods: readonly string[];
  /** Full-jitter exponential backoff: the n-th retry waits uniform [0, min(maxBackoff, backoff × 2^(n-1))). */
  backoffMs: number;
  maxBackoffMs: number;
  /** Retries in flight at most ratio × requests in flight to the service, and at least minConcurrent. */
  budget: { ratio: number; minConcurrent: number };
}

/** A circuit breaker's settings: the state machine's own config (src/resilience, which depends on nothing). */
export type BreakerSpec = BreakerConfig;

/** Outlier detection's settings, as the detector takes them. */
export type OutlierSpec = OutlierConfig;

export interface LimitsSpec {
  /** Requests in flight to the service (all versions) at once. */
  concurrency: number;
  /** Requests waiting for one of those slots, first come first served; past it 503 with Retry-After. */
  queue: number;
  /** Requests in flight to one instance; a full instance is passed over. */
  instanceConcurrency: number;
}

// ---------------------------------------------------------------- edge security
// docs/security.md gives each protection, its default and why.

/** A secret given by reference, never inline: its value is read when the node starts and never logged. */
export type SecretRef = { env: string } | { /** Absolute path. */ file: string };

/** Where an issuer's verification keys come from. */
export type JwtKeysSpec =
  /** A JWKS document over HTTP(S): cached, refetched on an unknown `kid` (at most once per cooldown) and when older than maxAge. */
  | { kind: 'jwks'; url: string; cacheMaxAgeMs: number; cooldownMs: number }
  /** A JWKS document in a file (absolute path), re-read when the file changes. */
  | { kind: 'jwks-file'; file: string }
  /** A PEM public key (SPKI) in a file (absolute path). */
  | { kind: 'public-key'; file: string }
  /** A shared secret for HS256/384/512. */
  | { kind: 'secret'; secret: SecretRef };

/** One JWT issuer (`auth.jwt.<name>`): the only one whose tokens are checked against these keys. */
export interface JwtIssuerSpec {
  name: string;
  /** The `iss` a token must carry. */
  issuer: string;
  /** A token's `aud` must contain one of these (empty: `aud` not checked). */
  audience: string[];
  /** The algorithms accepted from this issuer: pinned, never `none`. */
  algorithms: string[];
  keys: JwtKeysSpec;
  /** Tolerance on `exp` and `nbf` (and `iat` in the future). */
  clockSkewMs: number;
  /** Claim holding the subject's roles (a list, or a space-separated string). */
  rolesClaim: string;
  /** Claim holding the scopes (`scope`: a space-separated string; `scp`: a list). */
  scopesClaim: string;
}

/** Who must prove what to reach a service (or route). */
export interface AuthSpec {
  /** Issuers (names under `auth.jwt`) whose bearer tokens are accepted. */
  jwt: string[];
  /** Whether an API key (`x-api-key`) scoped to the group is accepted. */
  apiKey: boolean;
  /** A request with no credentials at all passes as anonymous; credentials that fail are still 401. */
  anonymous: boolean;
}

/**
 * One authorization rule. It applies to a request when its methods and path
 * match; it admits the request when the identity meets every condition it
 * sets. A request is admitted when some rule that applies admits it, and
 * refused (403) otherwise: default deny.
 */
export interface AuthorizeRule {
  /** Upper-case methods; null: any. */
  methods: string[] | null;
  /** A glob on the path the instance sees (`*` one segment, `**` any number); null: any. */
  path: string | null;
  /** The identity holds at least one of these roles; null: no condition. */
  roles: string[] | null;
  /** The identity holds every one of these scopes; null: no condition. */
  scopes: string[] | null;
  /** Each claim equals the value (or, for a list claim, contains it); null: no condition. */
  claims: Record<string, string> | null;
  /** Whether an anonymous request may be admitted by this rule (only with `auth.anonymous`). */
  anonymous: boolean;
}

/** A token bucket: `ratePerSecond` tokens added per second, holding at most `burst`. */
export interface RateRule {
  ratePerSecond: number;
  burst: number;
}

/** Buckets per service (or route), per client key. */
export interface RateLimitSpec {
  /** Keyed by the client's address (X-Forwarded-For only from trusted proxies). */
  perIp: RateRule | null;
  /** Keyed by the authenticated subject (JWT `sub`, API key); anonymous requests are not counted here. */
  perSubject: RateRule | null;
}

/** The edge policies: set per group, service and route (each overriding the one before, key by key). */
export interface EdgePolicySpec {
  /** null: no authentication; every request is anonymous and `authorize` does not apply. */
  auth: AuthSpec | null;
  authorize: AuthorizeRule[];
  rateLimit: RateLimitSpec;
  /** Request bodies larger than this get 413. */
  maxBodyBytes: number;
  /** Methods allowed (upper case); others get 405 with `Allow`. null: any. */
  methods: string[] | null;
}

/** A route of a service: requests whose path matches `path` take its edge policies instead of the service's. */
export interface RouteSpec {
  /** Glob on the path the instance sees (`/public/**`). Routes are tried in manifest order; the first match wins. */
  path: string;
  edge: EdgePolicySpec;
}

/** How Berth reaches a service's instances over TLS (files are absolute paths). */
export interface UpstreamTlsSpec {
  /** CA bundle (PEM) that signs the instances' certificates; absent: the system's CAs. */
  caFile?: string;
  /** Client certificate and key for mutual TLS. */
  certFile?: string;
  keyFile?: string;
  /** Name checked against the instance's certificate (default: the instance's address). */
  serverName?: string;
  /** false skips certificate verification (a self-signed instance in development): logged as a warning at start. */
  verify: boolean;
}

/** The HTTPS listener. */
export interface TlsListenerSpec {
  listen: ListenSpec;
  /** PEM files (absolute), reloaded when they change; a bad pair keeps the one in use. */
  certFile: string;
  keyFile: string;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  /** The plain listener answers every request with 308 to the HTTPS one. */
  redirect: boolean;
  /** Strict-Transport-Security on HTTPS responses; null: not sent. */
  hsts: { maxAgeSeconds: number; includeSubDomains: boolean; preload: boolean } | null;
}

/** Connection-level protections of the gateway's listeners. */
export interface EdgeSpec {
  /** CIDRs (or addresses) whose X-Forwarded-For is believed. Empty: nobody's. */
  trustedProxies: string[];
  connections: {
    /** Open client connections in total; past it new ones are closed at once. */
    max: number;
    /** Open client connections per client address. */
    perIp: number;
    /** Requests on one keep-alive connection, after which it is closed (Connection: close). 0: no limit. */
    maxRequests: number;
  };
  timeouts: {
    /** From a connection's first byte (or a keep-alive request's) to the end of its headers: slowloris. */
    headersMs: number;
    /** To receive a whole request, body included: slow bodies. */
    requestMs: number;
    /** A connection with no bytes either way for this long is closed. */
    idleMs: number;
    /** Between requests on a keep-alive connection. */
    keepAliveMs: number;
  };
  /** Bytes of request line and headers; past it 431. */
  maxHeaderBytes: number;
  /** Header fields in a request; past it 431. */
  maxHeaders: number;
}

/** Every policy of a service's requests, defaults applied (group, then service, override them). */
export interface PolicySpec {
  balancer: BalancerSpec;
  /** The whole request, retries included; past it 504. */
  timeoutMs: number;
  /** New instances' share ramps up over this (0: off). */
  slowStartMs: number;
  retries: RetrySpec | null;
  breaker: { instance: BreakerSpec | null; service: BreakerSpec | null };
  outlier: OutlierSpec | null;
  limits: LimitsSpec;
  /** Authentication, authorization, rate limits, body size and methods of requests that match no route. */
  edge: EdgePolicySpec;
}

export interface ServiceSpec {
  group: string;
  name: string;
  stable: string;
  policies: PolicySpec;
  /** Paths with edge policies of their own, in manifest order. */
  routes: RouteSpec[];
  /** null: instances are reached over plain HTTP. */
  upstreamTls: UpstreamTlsSpec | null;
  versions: VersionSpec[];
}

export interface GroupSpec {
  name: string;
  endpoint: EndpointSpec;
  /** The group's own policies (defaults ← group): what a service registered from outside into the group gets. */
  policies: PolicySpec;
  services: ServiceSpec[];
}

export interface ListenSpec {
  host: string;
  port: number;
}

export interface NodeSpec {
  /** Absolute path of the manifest file. */
  file: string;
  /** Absolute folder of the manifest: commands and relative paths resolve from here. */
  dir: string;
  /** This node's name in the catalog (default: the host name). */
  nodeName: string;
  gateway: { listen: ListenSpec; tls: TlsListenerSpec | null; edge: EdgeSpec };
  auth: {
    jwt: JwtIssuerSpec[];
    /** Key of the identity signature (x-berth-signature); null: a key generated once into the data dir. */
    identityKey: SecretRef | null;
  };
  admin: { listen: ListenSpec };
  /** Absolute data directory. */
  dataDir: string;
  /** Address instances listen on and are reached at. */
  instanceHost: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** Field names or pino paths redacted from every log line, besides Berth's own list (docs/security.md). */
  logRedact: string[];
  groups: GroupSpec[];
}

/** Every version of every service, flattened: what the supervisor reconciles. */
export function versionsOf(spec: NodeSpec): VersionSpec[] {
  return spec.groups.flatMap((g) => g.services.flatMap((s) => s.versions));
}
