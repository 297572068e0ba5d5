/**
 * What the gateway tells the rest of Berth about traffic. Metrics and the
 * access log implement it; the gateway knows neither.
 */

/** One finished request, as the access log and the metrics see it. */
export interface RequestRecord {
  requestId: string;
  method: string;
  /** The path as the client sent it (query string removed). */
  path: string;
  /** Null when no route matched. */
  group: string | null;
  service: string | null;
  version: string | null;
  /** The instance that answered (last try), or null. */
  instance: string | null;
  status: number;
  /** Request and response body bytes. */
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  clientIp: string;
  /** The gateway's own error code when it answered itself (`BERTH_ERR_NO_ROUTE`…). */
  error: string | null;
  /** Tries after the first. */
  retries: number;
  /** Who sent it, once authenticated (JWT `sub`, API key subject); null when anonymous or not authenticated. */
  subject: string | null;
}

export type UpstreamFailure = 'connect' | 'timeout' | 'reset';

/** What a retry was for: a failure without a response, or the status the instance answered. */
export type RetryReason = UpstreamFailure | `${number}`;

export interface RouteRef {
  group: string;
  service: string;
  version: string;
}

export type BreakerStateName = 'closed' | 'open' | 'half-open';

export interface GatewayObserver {
  requestStarted(): void;
  requestFinished(record: RequestRecord): void;
  upstreamFailed(kind: UpstreamFailure, route: RouteRef & { instance: string }): void;
  /** A try was retried. */
  retried(route: RouteRef, reason: RetryReason): void;
  /** A retry was wanted but the service's retry budget was spent. */
  retryRefused(route: RouteRef): void;
  /** The gateway refused a request itself: breaker open (BERTH_ERR_CIRCUIT_OPEN) or bulkhead full (BERTH_ERR_OVERLOADED). */
  rejected(route: RouteRef, code: string): void;
  /** A breaker changed state: a service's (no instance) or an instance's. */
  breakerChanged(scope: { group: string; service: string; version?: string; instance?: string }, from: BreakerStateName, to: BreakerStateName, reason: string): void;
  /** An instance was ejected by outlier detection, or returned. */
  outlierChanged(scope: RouteRef & { instance: string }, kind: 'ejected' | 'returned', reason: string | undefined, until: number | undefined): void;
  routeTableBuilt(info: { durationMs: number; routes: number; instances: number }): void;
  /** A client connection was closed on arrival: too many open in total, or from its address. */
  connectionRefused(reason: 'total' | 'per-ip', clientIp: string): void;
}

/** An observer that ignores everything; extend it to implement only some events. */
export class NullObserver implements GatewayObserver {
  requestStarted(): void {}
  requestFinished(_record: RequestRecord): void {}
  upstreamFailed(_kind: UpstreamFailure, _route: RouteRef & { instance: string }): void {}
  retried(_route: RouteRef, _reason: RetryReason): void {}
  retryRefused(_route: RouteRef): void {}
  rejected(_route: RouteRef, _code: string): void {}
  breakerChanged(_scope: { group: string; service: string; version?: string; instance?: string }, _from: BreakerStateName, _to: BreakerStateName, _reason: string): void {}
  outlierChanged(_scope: RouteRef & { instance: string }, _kind: 'ejected' | 'returned', _reason: string | undefined, _until: number | undefined): void {}
  routeTableBuilt(_info: { durationMs: number; routes: number; instances: number }): void {}
  connectionRefused(_reason: 'total' | 'per-ip', _clientIp: string): void {}
}

/** Sends every observation to each of `observers`, in order. */
export function fanOut(...observers: GatewayObserver[]): GatewayObserver {
  return {
    requestStarted: () => observers.forEach((o) => o.requestStarted()),
    requestFinished: (r) => observers.forEach((o) => o.requestFinished(r)),
    upstreamFailed: (k, r) => observers.forEach((o) => o.upstreamFailed(k, r)),
    retried: (r, why) => observers.forEach((o) => o.retried(r, why)),
    retryRefused: (r) => observers.forEach((o) => o.retryRefused(r)),
    rejected: (r, code) => observers.forEach((o) => o.rejected(r, code)),
    breakerChanged: (s, from, to, why) => observers.forEach((o) => o.breakerChanged(s, from, to, why)),
    outlierChanged: (s, kind, why, until) => observers.forEach((o) => o.outlierChanged(s, kind, why, until)),
    routeTableBuilt: (i) => observers.forEach((o) => o.routeTableBuilt(i)),
    connectionRefused: (why, ip) => observers.forEach((o) => o.connectionRefused(why, ip)),
  };
}
