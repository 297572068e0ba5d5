/**
 * The manifest's shape as a zod schema: one place that says which keys exist,
 * what each accepts, and how it reads when it is wrong. Every message starts
 * with "expected …"; `issues.ts` adds what was found and where.
 *
 * Rules that relate two fields (stable ∈ versions, unique endpoints, timeout ≤
 * interval, …) live in `rules.ts` instead: zod skips an object's refinements as
 * soon as any of its fields is wrong, and the manifest must report every
 * mistake in one go.
 */
import { constants } from 'node:os';
import { z } from 'zod';
import { parseDuration } from '../duration.js';
import { parseSize } from '../size.js';
import { LISTEN_EXPECTED, isHost, parseListen } from './listen.js';
import { isSemver } from './semver.js';
import { isCidr } from '../security/client-ip.js';

/** Group and service names: they appear in URLs, metric labels and file names. */
export const NAME = /^[a-z][a-z0-9-]{0,62}$/;
export const NAME_EXPECTED = 'a name of lowercase letters, digits and "-" that starts with a letter (at most 63 characters)';
export const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const SEMVER_EXPECTED = 'a semver version such as "1.2.3" or "2.0.0-beta.1" (quoted)';
export const DURATION_EXPECTED = 'a duration such as 500ms, 1s or 1m30s, or a number of milliseconds';
export const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const;
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
/** Env vars Berth itself gives every instance; a manifest may not set them. */
export function isReservedEnv(key: string): boolean {
  return key === 'PORT' || key.startsWith('BERTH_');
}

const expected = (what: string) => ({ error: () => `expected ${what}` });

/** A key in a map that does not take it: `unknown key "replica" (did you mean "replicas"?)`. */
export function unknownKeyMessage(key: string, known: readonly string[]): string {
  const guess = closest(key, known);
  return `unknown key ${JSON.stringify(key)} (${guess === undefined ? `expected one of ${known.join(', ')}` : `did you mean ${JSON.stringify(guess)}?`})`;
}

function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  // Beyond a third of the word, a "did you mean" is more noise than help.
  return bestDistance <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

/** Levenshtein distance, with an adjacent swap counted as one edit. */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => rows[i]?.[j] ?? Infinity;
  for (let i = 1; i <= a.length; i++) {
    const row = rows[i] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, at(i - 2, j - 2) + 1);
      row[j] = d;
    }
  }
  return at(a.length, b.length);
}

/** `z.strictObject` whose unknown-key issues carry one line per key, each with a suggestion. */
function strict<T extends z.core.$ZodLooseShape>(shape: T, what: string) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys' ? issue.keys.map((key) => unknownKeyMessage(key, known)).join('\n') : `expected ${what}`,
  });
}

/** Top-level keys that start with `x-` are the manifest's own scratch space: a home for YAML anchors (`x-defaults: &defaults`). */
export const EXTENSION_KEY = /^x-/;

function withoutExtensions(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([key]) => !EXTENSION_KEY.test(key)));
}

type Kind = 'string' | 'number' | 'boolean' | 'null' | 'array' | 'object' | 'undefined' | 'other';

export function kindOf(value: unknown): Kind {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  const t = typeof value;
  return t === 'string' || t === 'number' || t === 'boolean' || t === 'object' || t === 'undefined' ? t : 'other';
}

/**
 * A field that takes different shapes (`restart: always` or `restart: {…}`).
 * Dispatching on the YAML kind first means a wrong map reports its own wrong
 * key, instead of a vague "matches none of the alternatives".
 */
function byKind<B extends Partial<Record<Kind, z.ZodType>>>(what: string, branches: B) {
  type Out = { [K in keyof B]: B[K] extends z.ZodType ? z.output<B[K]> : never }[keyof B];
  return z.unknown().transform((value, ctx): Out => {
    const schema = branches[kindOf(value)];
    if (schema === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected ${what}`, input: value });
      return z.NEVER;
    }
    const result = schema.safeParse(value);
    if (!result.success) {
      for (const issue of result.error.issues) ctx.addIssue({ ...issue, input: value } as z.core.$ZodRawIssue);
      return z.NEVER;
    }
    return result.data as Out;
  });
}

const nonEmpty = (what: string) => z.string(expected(what)).refine((s) => s.trim() !== '', expected(what));

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => {
  const what = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
  return z.int(expected(what)).min(min, expected(what)).max(max, expected(what));
};

const port = (min: number) => int(min, 65535);

const durationOf = (what: string, min: number) =>
  z.union([z.string(), z.number()], expected(what)).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined || ms < min) {
      ctx.addIssue({ code: 'custom', message: `expected ${what}`, input: value });
      return z.NEVER;
    }
    return ms;
  });

/** Milliseconds. */
const duration = durationOf(DURATION_EXPECTED, 0);
const positiveDuration = durationOf(`a duration above zero such as 500ms, 1s or 1m30s, or a number of milliseconds`, 1);

const scalarString = z.union([z.string(), z.number(), z.boolean()], expected('a string, number or boolean')).transform(String);

const URL_PATH = 'a URL path starting with "/" (no spaces, "?" or "#")';
const urlPath = z.string(expected(URL_PATH)).regex(/^\/[^\s?#]*$/, expected(URL_PATH));

const envKey = z.string().superRefine((key, ctx) => {
  if (!ENV_KEY.test(key)) {
    ctx.addIssue({ code: 'custom', input: key, message: 'expected an environment variable name (letters, digits and "_", not starting with a digit)' });
  } else if (isReservedEnv(key)) {
    ctx.addIssue({ code: 'custom', input: key, message: `${JSON.stringify(key)} is reserved: Berth sets PORT and BERTH_* in every instance's environment` });
  }
});
const ENV_VALUE_EXPECTED = 'a string, number or boolean, or a secret by reference: { secret: { env: NAME } } or { secret: { file: PATH } }';
const envValue = byKind(ENV_VALUE_EXPECTED, {
  string: z.string(),
  number: z.number().transform(String),
  boolean: z.boolean().transform(String),
  object: strict(
    {
      secret: strict(
        {
          env: z.string(expected('an environment variable of the node')).regex(ENV_KEY, expected('an environment variable name')).optional(),
          file: nonEmpty('a file path (relative to the manifest folder)').optional(),
        },
        'a map with env (a variable of the node) or file (a path)',
      ),
    },
    ENV_VALUE_EXPECTED,
  ),
});
const env = z.record(envKey, envValue, expected('a map of environment variable names to values'));

export const SIZE_EXPECTED = 'a size such as 512KiB, 10MiB or 1GiB, or a number of bytes';
const sizeOf = (min: number) =>
  z.union([z.string(), z.number()], expected(SIZE_EXPECTED)).transform((value, ctx) => {
    const bytes = parseSize(value);
    if (bytes === undefined || bytes < min) {
      ctx.addIssue({ code: 'custom', message: `expected ${SIZE_EXPECTED}${min > 0 ? ` (at least ${min} bytes)` : ''}`, input: value });
      return z.NEVER;
    }
    return bytes;
  });

const USER_EXPECTED = 'an unprivileged user: a name such as nobody, "uid:gid" such as "1001:1001", or { uid, gid } (not root)';
const user = byKind(USER_EXPECTED, {
  string: z.string(expected(USER_EXPECTED)).superRefine((value, ctx) => {
    if (/^\d+:\d+$/.test(value) ? Number(value.split(':')[0]) === 0 : !/^[a-z_][a-z0-9_-]{0,31}\$?$/.test(value) || value === 'root') {
      ctx.addIssue({ code: 'custom', message: `expected ${USER_EXPECTED}`, input: value });
    }
  }),
  object: strict({ uid: int(1, 2 ** 31 - 1), gid: int(0, 2 ** 31 - 1) }, USER_EXPECTED),
});
const RESOURCES_EXPECTED = 'a map with memory, cpu, pids and openFiles';
const resources = strict(
  {
    memory: sizeOf(4 * 1024 * 1024).optional(),
    cpu: z.number(expected('a number of cores above 0, such as 0.5 or 2')).gt(0, expected('a number of cores above 0, such as 0.5 or 2')).max(1024, expected('at most 1024 cores')).optional(),
    pids: int(1).optional(),
    openFiles: int(16, 1 << 20).optional(),
  },
  RESOURCES_EXPECTED,
);
const SANDBOX_EXPECTED = 'true, false, or a map with writable (more folders the service may write, relative to the manifest folder)';
const sandbox = byKind(SANDBOX_EXPECTED, {
  boolean: z.boolean(),
  object: strict({ writable: z.array(nonEmpty('a folder path'), expected('a list of folder paths')).optional() }, SANDBOX_EXPECTED),
});


const SIGNAL_EXPECTED = 'a signal name such as SIGTERM, SIGINT, SIGQUIT or SIGHUP';
const signal = z.string(expected(SIGNAL_EXPECTED)).transform((value, ctx) => {
  const name = value.toUpperCase().startsWith('SIG') ? value.toUpperCase() : `SIG${value.toUpperCase()}`;
  if (!Object.hasOwn(constants.signals, name)) {
    ctx.addIssue({ code: 'custom', message: `expected ${SIGNAL_EXPECTED}`, input: value });
    return z.NEVER;
  }
  return name as NodeJS.Signals;
});

const policy = z.enum(RESTART_POLICIES, expected(`one of ${RESTART_POLICIES.join(' | ')}`));

const HEALTH_EXPECTED = 'false, or a map with at most one of http, tcp or command and the check settings';
const healthObject = strict(
  {
    http: urlPath.optional(),
    method: z.enum(['GET', 'HEAD'], expected('one of GET | HEAD')).optional(),
    headers: z.record(z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, expected('an HTTP header name')), scalarString, expected('a map of header names to values')).optional(),
    port: port(1).optional(),
    tcp: byKind('true, or a port number to probe (1-65535)', { boolean: z.literal(true, expected('true, or a port number to probe (1-65535)')), number: port(1) }).optional(),
    command: nonEmpty('a shell command line').optional(),
    interval: positiveDuration.optional(),
    timeout: positiveDuration.optional(),
    healthyThreshold: int(1).optional(),
    unhealthyThreshold: int(1).optional(),
    startPeriod: duration.optional(),
    restartAfter: duration.optional(),
  },
  HEALTH_EXPECTED,
);
const health = byKind(HEALTH_EXPECTED, { boolean: z.boolean(), object: healthObject });

const RESTART_EXPECTED = `one of ${RESTART_POLICIES.join(' | ')}, or a map with policy, backoff, maxBackoff, factor, stableAfter and maxRestarts`;
const restartObject = strict(
  {
    policy: policy.optional(),
    backoff: duration.optional(),
    maxBackoff: duration.optional(),
    factor: z.number(expected('a number >= 1')).min(1, expected('a number >= 1')).optional(),
    stableAfter: duration.optional(),
    maxRestarts: int(0).optional(),
  },
  RESTART_EXPECTED,
);
const restart = byKind(RESTART_EXPECTED, { string: policy, object: restartObject });

/** What a version may override; also what a service sets for all its versions. */
const runShape = {
  command: nonEmpty('a command line').optional(),
  args: z.array(scalarString, expected('a list of arguments')).optional(),
  cwd: nonEmpty('a folder path (relative to the manifest folder)').optional(),
  env: env.optional(),
  replicas: int(0).optional(),
  health: health.optional(),
  restart: restart.optional(),
  stopSignal: signal.optional(),
  drainTimeout: duration.optional(),
  stopTimeout: duration.optional(),
  user: user.optional(),
  resources: resources.optional(),
  sandbox: sandbox.optional(),
};

const VERSION_EXPECTED = 'a map of overrides (command, args, cwd, env, replicas, health, restart, stopSignal, drainTimeout, stopTimeout, user, resources, sandbox), or nothing';
const versionObject = strict(runShape, VERSION_EXPECTED);
const version = byKind(VERSION_EXPECTED, { object: versionObject, null: z.null().transform((): z.output<typeof versionObject> => ({})) });

const semver = z.string(expected(SEMVER_EXPECTED)).refine(isSemver, expected(SEMVER_EXPECTED));
const semverKey = z.string().refine(isSemver, expected(SEMVER_EXPECTED));
const nameKey = z.string().regex(NAME, expected(NAME_EXPECTED));

const nonEmptyMap = (what: string) => ({
  error: () => `expected at least one ${what}`,
});

// ---------------------------------------------------------------- policies
// The gateway's policies for a service's requests. A group sets them for all
// its services; a service overrides them key by key (policies.ts merges).

const HEADER_NAME = 'an HTTP header name';
const headerName = z.string(expected(HEADER_NAME)).regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, expected(HEADER_NAME)).transform((h) => h.toLowerCase());
const COOKIE_NAME = 'a cookie name';
const cookieName = z.string(expected(COOKIE_NAME)).regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, expected(COOKIE_NAME));
const ratio = z.number(expected('a number from 0 to 1')).min(0, expected('a number from 0 to 1')).max(1, expected('a number from 0 to 1'));
const percent = int(0, 100);

export const BALANCER_KINDS = ['peak-ewma', 'round-robin', 'least-request'] as const;
const BALANCER_EXPECTED = `one of ${BALANCER_KINDS.join(' | ')}, or a map { hash: { header: NAME } } or { hash: { cookie: NAME } }`;
const balancer = byKind(BALANCER_EXPECTED, {
  string: z.enum(BALANCER_KINDS, expected(BALANCER_EXPECTED)),
  object: strict({ hash: strict({ header: headerName.optional(), cookie: cookieName.optional() }, 'a map with header or cookie') }, BALANCER_EXPECTED),
});

export const RETRY_CONDITIONS = ['connect', 'reset', 'timeout'] as const;
const RETRY_ON_EXPECTED = `one of ${RETRY_CONDITIONS.join(' | ')}, or an HTTP status from 400 to 599`;
const retryOn = byKind(RETRY_ON_EXPECTED, { string: z.enum(RETRY_CONDITIONS, expected(RETRY_ON_EXPECTED)), number: int(400, 599) });
const METHOD_EXPECTED = 'an HTTP method such as GET or PUT';
const method = z.string(expected(METHOD_EXPECTED)).regex(/^[A-Za-z]+$/, expected(METHOD_EXPECTED)).transform((m) => m.toUpperCase());
const RETRIES_EXPECTED = 'false, true, or a map with attempts, tryTimeout, on, methods, backoff, maxBackoff and budget';
const retries = byKind(RETRIES_EXPECTED, {
  boolean: z.boolean(),
  object: strict(
    {
      attempts: int(0, 10).optional(),
      tryTimeout: positiveDuration.optional(),
      on: z.array(retryOn, expected(`a list of ${RETRY_ON_EXPECTED}`)).optional(),
      methods: z.array(method, expected('a list of HTTP methods')).optional(),
      backoff: positiveDuration.optional(),
      maxBackoff: positiveDuration.optional(),
      budget: strict({ ratio: ratio.optional(), minConcurrent: int(0).optional() }, 'a map with ratio and minConcurrent').optional(),
    },
    RETRIES_EXPECTED,
  ),
});

const BREAKER_RULE_EXPECTED = 'false, true, or a map with consecutiveFailures, failureRatio, window, minRequests, openFor, maxOpenFor and halfOpenRequests';
const breakerRule = byKind(BREAKER_RULE_EXPECTED, {
  boolean: z.boolean(),
  object: strict(
    {
      consecutiveFailures: int(0).optional(),
      failureRatio: ratio.optional(),
      window: positiveDuration.optional(),
      minRequests: int(1).optional(),
      openFor: positiveDuration.optional(),
      maxOpenFor: positiveDuration.optional(),
      halfOpenRequests: int(1).optional(),
    },
    BREAKER_RULE_EXPECTED,
  ),
});
const BREAKER_EXPECTED = 'false, true, or a map with instance and service breakers';
const breaker = byKind(BREAKER_EXPECTED, {
  boolean: z.boolean(),
  object: strict({ instance: breakerRule.optional(), service: breakerRule.optional() }, BREAKER_EXPECTED),
});

const LATENCY_EXPECTED = 'false, or a map with factor, min and minRequests';
const OUTLIER_EXPECTED = 'false, true, or a map with consecutiveErrors, consecutiveGatewayErrors, ejectionTime, maxEjectionTime, maxEjectedPercent, latency and panicThreshold';
const outlier = byKind(OUTLIER_EXPECTED, {
  boolean: z.boolean(),
  object: strict(
    {
      consecutiveErrors: int(0).optional(),
      consecutiveGatewayErrors: int(0).optional(),
      ejectionTime: positiveDuration.optional(),
      maxEjectionTime: positiveDuration.optional(),
      maxEjectedPercent: percent.optional(),
      latency: byKind(LATENCY_EXPECTED, {
        boolean: z.literal(false, expected(LATENCY_EXPECTED)),
        object: strict(
          {
            factor: z.number(expected('a number above 1')).gt(1, expected('a number above 1')).optional(),
            min: duration.optional(),
            minRequests: int(1).optional(),
          },
          LATENCY_EXPECTED,
        ),
      }).optional(),
      panicThreshold: percent.optional(),
    },
    OUTLIER_EXPECTED,
  ),
});

const LIMITS_EXPECTED = 'a map with concurrency, queue and instanceConcurrency';
const limits = strict({ concurrency: int(1).optional(), queue: int(0).optional(), instanceConcurrency: int(1).optional() }, LIMITS_EXPECTED);

// ---------------------------------------------------------------- edge policies
// Authentication, authorization, rate limits, body size and methods: set per
// group, service and route (docs/security.md).

const ISSUER_NAME = 'an issuer name (under auth.jwt)';
const issuerName = z.string(expected(ISSUER_NAME)).regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, expected(ISSUER_NAME));
const AUTH_EXPECTED = 'false, or a map with jwt, apiKey and anonymous';
const auth = byKind(AUTH_EXPECTED, {
  boolean: z.literal(false, expected(AUTH_EXPECTED)),
  object: strict(
    {
      jwt: byKind('an issuer name or a list of them', { string: issuerName, array: z.array(issuerName, expected('a list of issuer names')) }).optional(),
      apiKey: z.boolean(expected('true or false')).optional(),
      anonymous: z.boolean(expected('true or false')).optional(),
    },
    AUTH_EXPECTED,
  ),
});

const GLOB_EXPECTED = 'a path glob starting with "/" (* matches one segment, ** any number)';
export const PATH_GLOB = /^\/[^\s?#]*$/;
const pathGlob = z.string(expected(GLOB_EXPECTED)).regex(PATH_GLOB, expected(GLOB_EXPECTED));
const claimValue = z.union([z.string(), z.number(), z.boolean()], expected('a string, number or boolean')).transform(String);
const RULE_EXPECTED = 'a map with methods, path, roles, scopes, claims and anonymous';
const authorizeRule = strict(
  {
    methods: z.array(method, expected('a list of HTTP methods')).optional(),
    path: pathGlob.optional(),
    roles: z.array(nonEmpty('a role'), expected('a list of roles')).optional(),
    scopes: z.array(nonEmpty('a scope'), expected('a list of scopes')).optional(),
    claims: z.record(z.string(), claimValue, expected('a map of claim names to values')).optional(),
    anonymous: z.boolean(expected('true or false')).optional(),
  },
  RULE_EXPECTED,
);
const authorize = z.array(authorizeRule, expected('a list of rules (maps with methods, path, roles, scopes, claims, anonymous)'));

export const RATE_EXPECTED = 'a rate such as 100/s, 1000/m or 5/10s';
/** `100/s`, `1000/m`, `5/10s`: a count per duration. */
export function parseRate(text: string): { count: number; perMs: number } | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(\S+)\s*$/.exec(text);
  if (!m) return undefined;
  const count = Number(m[1]);
  const unit = m[2] ?? '';
  const perMs = parseDuration(/^\d/.test(unit) ? unit : `1${unit}`);
  return count > 0 && perMs !== undefined && perMs > 0 ? { count, perMs } : undefined;
}
const rate = z.string(expected(RATE_EXPECTED)).transform((value, ctx) => {
  const parsed = parseRate(value);
  if (parsed === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected ${RATE_EXPECTED}`, input: value });
    return z.NEVER;
  }
  return parsed;
});
const RATE_RULE_EXPECTED = `false, ${RATE_EXPECTED}, or a map with rate and burst`;
const rateRule = byKind(RATE_RULE_EXPECTED, {
  boolean: z.literal(false, expected(RATE_RULE_EXPECTED)),
  string: rate,
  object: strict({ rate, burst: int(1).optional() }, RATE_RULE_EXPECTED),
});
const RATE_LIMIT_EXPECTED = 'false, or a map with perIp and perSubject';
const rateLimit = byKind(RATE_LIMIT_EXPECTED, {
  boolean: z.literal(false, expected(RATE_LIMIT_EXPECTED)),
  object: strict({ perIp: rateRule.optional(), perSubject: rateRule.optional() }, RATE_LIMIT_EXPECTED),
});

/** The edge policy keys: a group, a service and a route may set them. */
const edgeShape = {
  auth: auth.optional(),
  authorize: authorize.optional(),
  rateLimit: rateLimit.optional(),
  maxBody: sizeOf(0).optional(),
  methods: z.array(method, expected('a list of HTTP methods')).min(1, expected('a list of at least one HTTP method')).optional(),
};
export const EDGE_KEYS = Object.keys(edgeShape) as (keyof typeof edgeShape)[];

const ROUTE_EXPECTED = 'a map with path and edge policies (auth, authorize, rateLimit, maxBody, methods)';
const route = strict({ path: pathGlob, ...edgeShape }, ROUTE_EXPECTED);

const FILE_EXPECTED = 'a file path (relative to the manifest folder)';
const SECRET_EXPECTED = 'a map with env (an environment variable of the node) or file (a path)';
const secretRef = strict({ env: envKey.optional(), file: nonEmpty(FILE_EXPECTED).optional() }, SECRET_EXPECTED);

const UPSTREAM_TLS_EXPECTED = 'true, or a map with ca, cert, key, serverName and verify';
const upstreamTls = byKind(UPSTREAM_TLS_EXPECTED, {
  boolean: z.boolean(),
  object: strict(
    {
      ca: nonEmpty(FILE_EXPECTED).optional(),
      cert: nonEmpty(FILE_EXPECTED).optional(),
      key: nonEmpty(FILE_EXPECTED).optional(),
      serverName: z.string(expected('a host name')).refine(isHost, expected('a host name')).optional(),
      verify: z.boolean(expected('true or false')).optional(),
    },
    UPSTREAM_TLS_EXPECTED,
  ),
});

/** Keys a group sets for all its services, and a service for itself. */
const policyShape = {
  ...edgeShape,
  balancer: balancer.optional(),
  timeout: positiveDuration.optional(),
  slowStart: duration.optional(),
  retries: retries.optional(),
  breaker: breaker.optional(),
  outlier: outlier.optional(),
  limits: limits.optional(),
};
export const POLICY_KEYS = Object.keys(policyShape) as (keyof typeof policyShape)[];

const service = strict(
  {
    ...runShape,
    ...policyShape,
    routes: z.array(route, expected('a list of routes (maps with path and edge policies)')).optional(),
    tls: upstreamTls.optional(),
    version: semver.optional(),
    stable: semver.optional(),
    versions: z
      .record(semverKey, version, expected('a map of semver versions to overrides'))
      .refine((r) => Object.keys(r).length > 0, nonEmptyMap('version'))
      .optional(),
  },
  'a map describing the service (command, replicas, versions, health, …)',
);

const HOST_EXPECTED = 'a host name such as payments.example.com';
const ENDPOINT_EXPECTED = 'a path starting with "/", or a map with one of path, host or port';
const endpoint = byKind(ENDPOINT_EXPECTED, {
  string: urlPath,
  object: strict(
    {
      path: urlPath.optional(),
      host: z.string(expected(HOST_EXPECTED)).refine(isHost, expected(HOST_EXPECTED)).transform((h) => h.toLowerCase()).optional(),
      port: port(0).optional(),
    },
    ENDPOINT_EXPECTED,
  ),
});

const group = strict(
  {
    endpoint: endpoint.optional(),
    ...policyShape,
    services: z
      .record(nameKey, service, expected('a map of service names to services'))
      .refine((r) => Object.keys(r).length > 0, nonEmptyMap('service')),
  },
  'a map with endpoint, services and policies (timeout, retries, breaker, …)',
);

const listen = z.union([z.string(), z.number()], expected(LISTEN_EXPECTED)).transform((value, ctx) => {
  const spec = parseListen(value);
  if (spec === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected ${LISTEN_EXPECTED}`, input: value });
    return z.NEVER;
  }
  return spec;
});

const REDACT_EXPECTED = 'a field name such as apiKey, or a path such as body.card.number or headers["x-session"]';
/** A pino redact path: a name, then `.name`, `.*`, `["quoted name"]`, `[0]` or `[*]` segments. */
export const REDACT_PATH = /^[A-Za-z_$][\w$-]*(?:\.(?:[A-Za-z_$][\w$-]*|\*)|\[(?:"[^"\]]+"|'[^'\]]+'|\d+|\*)\])*$/;
const redactPath = z.string(expected(REDACT_EXPECTED)).superRefine((path, ctx) => {
  if (path.startsWith('*')) {
    // pino would send every field of every line through its redactor: ~15× the cost of a line.
    ctx.addIssue({ code: 'custom', input: path, message: `a path may not start with "*" (it would slow every log line); name the field: a bare name is looked for at the top level and in headers, err, req, res and the other objects Berth logs` });
  } else if (!REDACT_PATH.test(path)) {
    ctx.addIssue({ code: 'custom', input: path, message: `expected ${REDACT_EXPECTED}` });
  }
});

export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
const HSTS_EXPECTED = 'true, false, or a map with maxAge, includeSubDomains and preload';
export const CIDR_EXPECTED = 'an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8';
const cidr = z.string(expected(CIDR_EXPECTED)).refine(isCidr, expected(CIDR_EXPECTED));

/** Algorithms a JWT issuer may pin; `none` is not one of them. */
export const JWT_ALGORITHMS = ['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
const URL_EXPECTED = 'an http:// or https:// URL';
const httpUrl = z.string(expected(URL_EXPECTED)).refine((u) => {
  try {
    const url = new URL(u);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}, expected(URL_EXPECTED));
const JWT_ISSUER_EXPECTED = 'a map with issuer, algorithms, one of jwks, jwksFile, publicKey or secret, and optionally audience, clockSkew, rolesClaim, scopesClaim, cacheMaxAge and cooldown';
const jwtIssuer = strict(
  {
    issuer: nonEmpty('the issuer (the iss claim its tokens carry)'),
    audience: byKind('an audience or a list of them', { string: nonEmpty('an audience'), array: z.array(nonEmpty('an audience'), expected('a list of audiences')) }).optional(),
    algorithms: z.array(z.enum(JWT_ALGORITHMS, expected(`one of ${JWT_ALGORITHMS.join(' | ')}`)), expected('a list of algorithms')).min(1, expected('at least one algorithm')),
    jwks: httpUrl.optional(),
    jwksFile: nonEmpty(FILE_EXPECTED).optional(),
    publicKey: nonEmpty(FILE_EXPECTED).optional(),
    secret: secretRef.optional(),
    clockSkew: durationOf('a duration from 0 to 5m', 0).refine((ms) => ms <= 300_000, expected('a duration from 0 to 5m')).optional(),
    rolesClaim: nonEmpty('a claim name').optional(),
    scopesClaim: nonEmpty('a claim name').optional(),
    cacheMaxAge: positiveDuration.optional(),
    cooldown: positiveDuration.optional(),
  },
  JWT_ISSUER_EXPECTED,
);

const NODE_EXPECTED = 'a node name of letters, digits, ".", "_" and "-" (at most 253 characters)';

export const manifestSchema = z.preprocess(withoutExtensions, strict(
  {
    node: z.string(expected(NODE_EXPECTED)).regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, expected(NODE_EXPECTED)).optional(),
    gateway: strict(
      {
        listen: listen.optional(),
        tls: strict(
          {
            listen: listen.optional(),
            cert: nonEmpty(FILE_EXPECTED),
            key: nonEmpty(FILE_EXPECTED),
            minVersion: z.enum(TLS_VERSIONS, expected(`one of ${TLS_VERSIONS.join(' | ')}`)).optional(),
            redirect: z.boolean(expected('true or false')).optional(),
            hsts: byKind(HSTS_EXPECTED, {
              boolean: z.boolean(),
              object: strict({ maxAge: duration.optional(), includeSubDomains: z.boolean(expected('true or false')).optional(), preload: z.boolean(expected('true or false')).optional() }, HSTS_EXPECTED),
            }).optional(),
          },
          'a map with listen, cert, key, minVersion, redirect and hsts',
        ).optional(),
        trustedProxies: z.array(cidr, expected('a list of addresses or CIDR ranges')).optional(),
        connections: strict({ max: int(1).optional(), perIp: int(1).optional(), maxRequests: int(0).optional() }, 'a map with max, perIp and maxRequests').optional(),
        timeouts: strict(
          { headers: positiveDuration.optional(), request: positiveDuration.optional(), idle: positiveDuration.optional(), keepAlive: positiveDuration.optional() },
          'a map with headers, request, idle and keepAlive',
        ).optional(),
        maxHeaderSize: sizeOf(1024).optional(),
        maxHeaders: int(1, 1000).optional(),
      },
      'a map with listen, tls, trustedProxies, connections, timeouts, maxHeaderSize and maxHeaders',
    ).optional(),
    admin: strict(
      { listen: listen.optional(), allowRemote: z.boolean(expected('true or false')).optional() },
      'a map with listen and allowRemote',
    ).optional(),
    auth: strict(
      {
        jwt: z.record(issuerName, jwtIssuer, expected('a map of issuer names to issuers')).optional(),
        identityKey: secretRef.optional(),
      },
      'a map with jwt (issuers) and identityKey',
    ).optional(),
    dataDir: nonEmpty('a folder path (relative to the manifest folder)').optional(),
    instanceHost: z.string(expected('a host name or IP address')).refine(isHost, expected('a host name or IP address')).optional(),
    log: strict(
      {
        level: z.enum(LOG_LEVELS, expected(`one of ${LOG_LEVELS.join(' | ')}`)).optional(),
        redact: z.array(redactPath, expected('a list of field names or paths to redact')).optional(),
      },
      'a map with level and redact',
    ).optional(),
    groups: z
      .record(nameKey, group, expected('a map of group names to groups'))
      .refine((r) => Object.keys(r).length > 0, nonEmptyMap('group')),
  },
  'a map with groups (and optionally node, gateway, admin, auth, dataDir, instanceHost, log)',
));

/** The manifest as zod hands it over: shapes checked, durations in ms, nothing defaulted yet. */
export type ManifestInput = z.output<typeof manifestSchema>;
export type GroupInput = ManifestInput['groups'][string];
export type ServiceInput = GroupInput['services'][string];
export type HealthInput = NonNullable<ServiceInput['health']>;
export type RestartInput = NonNullable<ServiceInput['restart']>;
export type EndpointInput = NonNullable<GroupInput['endpoint']>;
/** The policy keys as a group or a service gives them. */
export type PolicyInput = Pick<ServiceInput, (typeof POLICY_KEYS)[number]>;
/** The edge policy keys as a group, a service or a route gives them. */
export type EdgeInput = Pick<ServiceInput, (typeof EDGE_KEYS)[number]>;
export type RouteInput = NonNullable<ServiceInput['routes']>[number];
export type GatewayInput = NonNullable<ManifestInput['gateway']>;
export type AuthInput = NonNullable<ManifestInput['auth']>;
export type JwtIssuerInput = NonNullable<AuthInput['jwt']>[string];
export type SecretRefInput = NonNullable<AuthInput['identityKey']>;
export type UpstreamTlsInput = NonNullable<ServiceInput['tls']>;
