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
  reason: 'reason',
  state: 'state',
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
  gatewayRetries: {
    name: 'berth_gateway_retries_total',
    help: 'Tries the gateway retried, by route and reason: connect, reset, timeout, or status (the instance answered a retryable status).',
    labelNames: [...ROUTE, Label.reason],
  },
  gatewayRetryBudgetExhausted: {
    name: 'berth_gateway_retry_budget_exhausted_total',
    help: 'Retries the gateway wanted to make but the service\'s retry budget refused.',
    labelNames: ROUTE,
  },
  gatewayRejected: {
    name: 'berth_gateway_rejected_total',
    help: 'Requests the gateway refused itself, by route and reason: circuit-open (the service breaker, 503), overloaded (its concurrency limit and queue are full, 503), rate-limited (429), unauthenticated (401), forbidden (403), method-not-allowed (405), body-too-large (413).',
    labelNames: [...ROUTE, Label.reason],
  },
  circuitBreakerState: {
    name: 'berth_circuit_breaker_state',
    help: '1 for each circuit breaker, labelled with its state (closed, open, half-open). A service breaker has empty version and instance. Open turns half-open when the next request asks.',
    labelNames: [Label.group, Label.service, Label.version, Label.instance, Label.state],
  },
  circuitBreakerOpened: {
    name: 'berth_circuit_breaker_opened_total',
    help: 'Times a circuit breaker opened (a service breaker has empty version and instance).',
    labelNames: [Label.group, Label.service, Label.version, Label.instance],
  },
  outlierEjections: {
    name: 'berth_outlier_ejections_total',
    help: 'Instances ejected by outlier detection, by route and reason (consecutive-errors, consecutive-gateway-errors, latency).',
    labelNames: [...ROUTE, Label.reason],
  },
  outlierEjected: {
    name: 'berth_outlier_ejected_instances',
    help: 'Instances currently ejected by outlier detection, by route.',
    labelNames: ROUTE,
  },
  gatewayConnectionsRefused: {
    name: 'berth_gateway_connections_refused_total',
    help: 'Client connections closed on arrival, by reason: total (gateway.connections.max open already) or per-ip (gateway.connections.perIp open from that address).',
    labelNames: [Label.reason],
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
  instanceCpuPercent: {
    name: 'berth_instance_cpu_percent',
    help: 'CPU an instance of this node used over the last sample interval, in percent of one core (150: one and a half cores), its processes summed.',
    labelNames: INSTANCE,
  },
  instanceMemoryRss: {
    name: 'berth_instance_memory_rss_bytes',
    help: 'Resident memory of an instance of this node, its processes summed, at the last sample.',
    labelNames: INSTANCE,
  },
  instanceOpenFds: {
    name: 'berth_instance_open_fds',
    help: 'File descriptors open in an instance\'s processes at the last sample (absent when Berth may not read them).',
    labelNames: INSTANCE,
  },
  instanceThreads: {
    name: 'berth_instance_threads',
    help: 'Threads of an instance\'s processes at the last sample.',
    labelNames: INSTANCE,
  },
  instanceProcesses: {
    name: 'berth_instance_processes',
    help: 'Processes of an instance (its process group, or its cgroup) at the last sample.',
    labelNames: INSTANCE,
  },
  instanceMemoryLimit: {
    name: 'berth_instance_memory_limit_bytes',
    help: 'Memory limit of an instance of this node (absent when unlimited).',
    labelNames: INSTANCE,
  },
  instanceCpuLimit: {
    name: 'berth_instance_cpu_limit_cores',
    help: 'CPU limit of an instance of this node, in cores (absent when unlimited).',
    labelNames: INSTANCE,
  },
  instancePidsLimit: {
    name: 'berth_instance_pids_limit',
    help: 'Limit on an instance\'s processes and threads together (absent when unlimited).',
    labelNames: INSTANCE,
  },
  catalogInstances: {
    name: 'berth_catalog_instances',
    help: 'Instances in the catalog by status, stopped ones (history) included.',
    labelNames: [Label.status],
  },
} as const satisfies Record<string, MetricDefinition>;
