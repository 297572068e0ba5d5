import type { CheckResult } from '../catalog/types.js';

/** Where a check probes: the instance's address and port. */
export interface CheckTarget {
  host: string;
  port: number;
  /** Working dir and environment, for command checks. */
  cwd: string;
  env: Record<string, string>;
}

/** One kind of health check. `run` never throws: a failure is a `critical` result. */
export interface Check {
  run(target: CheckTarget, signal: AbortSignal): Promise<Omit<CheckResult, 'at' | 'durationMs'>>;
}
