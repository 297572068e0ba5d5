/**
 * Every metric Berth exports: name, help text and label names, defined once
 * so code, docs/metrics.md, alert rules and tests use the same words.
 * Prometheus naming: prefix `berth_`, base units (`_seconds`, `_bytes`),
 * counters end in `_total`.
 */

export const METRIC_PREFIX = 'berth_';

/** Label names. `instance` is Berth's instance id; see docs/metrics.md on Prometheus' own `instance` target label. */
export const Label = {
  group: 'group',
  service: 'service',
  version: 'version',
  instance: 'instance',
  node: 'node',
  status: 'status',
  codeClass: 'code_class',
  kind: 'kind',
} as const;

export type LabelName = (typeof Label)[keyof typeof Label];

export interface MetricDefinition {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly LabelName[];
}

const ROUTE = [Label.group, Label.service, Label.version] as const;
const INSTANCE = [Label.group, Label.service, Label.version, Label.instance, Label.node] as const;

/** The metric families Berth defines itself (prom-client's process metrics come on top, prefixed `berth_`). */
export const MetricNames = {
  gatewayRequests: {
    name: 'berth_gateway_requests_total',
    help: 'Requests the gateway finished, by route and status class (2xx..5xx). Requests no route matched have empty group, service and version.',
    labelNames: [...ROUTE, Label.codeClass],
  },
  gatewayRequestDuration: {
    name: 'berth_gateway_request_duration_seconds',
    help: 'Time from the gateway receiving a request to finishing its response, by route.',
    labelNames: ROUTE,
  },
  gatewayRequestsInFlight: {
    name: 'berth_gateway_requests_in_flight',
    help: 'Requests the gateway has started and not yet finished.',
    labelNames: [],
  },
  gatewayRequestBytes: {
    name: 'berth_gateway_request_bytes_total',
    help: 'Request body bytes the gateway received, by group and service.',
    labelNames: [Label.group, Label.service],
  },
  gatewayResponseBytes: {
    name: 'berth_gateway_response_bytes_total',
    help: 'Response body bytes the gateway sent, by group and service.',
    labelNames: [Label.group, Label.service],
  },
  gatewayUpstreamFailures: {
    name: 'berth_gateway_upstream_failures_total',
    help: 'Tries at an instance that failed: connect (nothing reached it), timeout (no headers in time, or a stalled body) or reset (the connection closed or broke).',
    labelNames: [...ROUTE, Label.kind],
  },
  routeTableRebuild: {
    name: 'berth_route_table_rebuild_seconds',
    help: 'Time to compile the route table from the catalog.',
    labelNames: [],
  },
  routeTableRoutes: {
    name: 'berth_route_table_routes',
    help: 'Routes in the route table in force.',
    labelNames: [],
  },
  routeTableInstances: {
    name: 'berth_route_table_instances',
    help: 'Instances the route table in force can send requests to.',
    labelNames: [],
  },
  instanceStatus: {
    name: 'berth_instance_status',
    help: '1 for each instance of this node, labelled with its current status (one series per instance; it has no series for the statuses it is not in).',
    labelNames: [...INSTANCE, Label.status],
  },
  instanceUp: {
    name: 'berth_instance_up',
    help: 'Whether an instance of this node is passing its checks (1) or not (0).',
    labelNames: INSTANCE,
  },
  instanceRestarts: {
    name: 'berth_instance_restarts_total',
    help: 'Times an instance of this node had its process restarted (crash, exit or health), as kept in the catalog.',
    labelNames: INSTANCE,
  },
  catalogInstances: {
    name: 'berth_catalog_instances',
    help: 'Instances in the catalog by status, stopped ones (history) included.',
    labelNames: [Label.status],
  },
} as const satisfies Record<string, MetricDefinition>;
