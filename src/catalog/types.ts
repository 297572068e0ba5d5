/**
 * The catalog: observed state of every instance. Nothing here knows of the
 * gateway or the supervisor; they read and write it through these types.
 */

export const INSTANCE_STATUSES = ['starting', 'passing', 'warning', 'critical', 'draining', 'stopped', 'failed'] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

/** Result of one health check run. */
export interface CheckResult {
  status: 'passing' | 'warning' | 'critical';
  /** Short human text: `HTTP 200`, `connect ECONNREFUSED`, `exit 1: …`. */
  output: string;
  /** ISO time the check finished. */
  at: string;
  durationMs: number;
}

export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /** ISO time of the exit. */
  at: string;
  /** The kernel killed it for going over its memory limit (docs/isolation.md). */
  oomKilled?: boolean;
}

export interface InstanceRecord {
  id: string;
  node: string;
  group: string;
  service: string;
  version: string;
  /** Host the instance listens on. */
  address: string;
  port: number;
  /** Pid of the current process; null when none runs. */
  pid: number | null;
  status: InstanceStatus;
  /** Times this instance's process was restarted (crash, exit or health). */
  restarts: number;
  /** `supervised` instances are run by a node; `external` ones registered themselves. */
  source: 'supervised' | 'external';
  /** ISO time the instance was created. */
  createdAt: string;
  /** ISO time the current process started; null when none runs. */
  startedAt: string | null;
  /** ISO time of the last status change. */
  updatedAt: string;
  lastCheck: CheckResult | null;
  lastExit: ExitInfo | null;
  /** Why the instance is in its status, when that is not obvious (`crash loop: 16 exits…`). */
  reason: string | null;
  /** Share of its version's traffic relative to siblings, for weighted balancers (default 1; 0 takes none). */
  weight: number;
  /** How an external instance proves it is alive; null for supervised ones. */
  registration: RegistrationInfo | null;
}

/** Kept with an external instance so any node can keep checking it after a restart. */
export interface RegistrationInfo {
  /** TTL heartbeat: critical when no heartbeat came for this long. */
  ttlMs: number | null;
  /** Active HTTP check instead of (or besides) a TTL. */
  http: { path: string; intervalMs: number; timeoutMs: number } | null;
  /** Removed from the catalog after being critical this long (Consul's DeregisterCriticalServiceAfter). */
  deregisterAfterMs: number;
  /** ISO time of the last heartbeat. */
  lastHeartbeat: string | null;
  /** Free-form labels given at registration. */
  tags: string[];
}
