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
}

export type UpstreamFailure = 'connect' | 'timeout' | 'reset';

export interface GatewayObserver {
  requestStarted(): void;
  requestFinished(record: RequestRecord): void;
  upstreamFailed(kind: UpstreamFailure, route: { group: string; service: string; version: string; instance: string }): void;
  routeTableBuilt(info: { durationMs: number; routes: number; instances: number }): void;
}

/** Sends every observation to each of `observers`, in order. */
export function fanOut(...observers: GatewayObserver[]): GatewayObserver {
  return {
    requestStarted: () => observers.forEach((o) => o.requestStarted()),
    requestFinished: (r) => observers.forEach((o) => o.requestFinished(r)),
    upstreamFailed: (k, r) => observers.forEach((o) => o.upstreamFailed(k, r)),
    routeTableBuilt: (i) => observers.forEach((o) => o.routeTableBuilt(i)),
  };
}
