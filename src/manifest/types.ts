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
  replicas: number;
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
}

export interface ServiceSpec {
  group: string;
  name: string;
  stable: string;
  policies: PolicySpec;
  versions: VersionSpec[];
}

export interface GroupSpec {
  name: string;
  endpoint: EndpointSpec;
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
  gateway: { listen: ListenSpec };
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
