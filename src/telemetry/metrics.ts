/**
 * Berth's Prometheus metrics: what the gateway observes, what the catalog
 * holds, and the process itself, in one registry of their own (never
 * prom-client's global one, so two nodes in one process, or a test, do not
 * share series). Names, help and labels come from metric-names.ts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { InstanceRecord } from '../catalog/types.js';
import { INSTANCE_STATUSES } from '../catalog/types.js';
import type { BreakerStateName, GatewayObserver, RequestRecord, RetryReason, RouteRef, UpstreamFailure } from '../gateway/observer.js';
import type { UsageSource } from '../supervisor/isolation/usage.js';
import { METRIC_PREFIX, MetricNames, type LabelName, type MetricDefinition } from './metric-names.js';

/**
 * Upper bounds, in seconds, of `berth_gateway_request_duration_seconds`: from
 * the gateway's own overhead (well under a millisecond) to a slow instance
 * (seconds); anything slower lands in `+Inf`.
 */
export const REQUEST_DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Upper bounds, in seconds, of `berth_route_table_rebuild_seconds`: a compile is expected well under 10 ms. */
export const ROUTE_TABLE_REBUILD_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** Values of the `code_class` label, in the order RouteStats counts them. */
export const CODE_CLASSES = ['2xx', '3xx', '4xx', '5xx'] as const;

/** Values of the `kind` label of upstream failures, in the order RouteStats counts them. */
export const UPSTREAM_FAILURE_KINDS = ['connect', 'timeout', 'reset'] as const satisfies readonly UpstreamFailure[];

/** Values of the `reason` label of retries. */
export const RETRY_REASONS = ['connect', 'reset', 'timeout', 'status'] as const;
/** Values of the `reason` label of the gateway's own refusals. */
export const REJECT_REASONS = ['circuit-open', 'overloaded', 'rate-limited', 'unauthenticated', 'forbidden', 'method-not-allowed', 'body-too-large'] as const;
/** The error code of each refusal, by REJECT_REASONS index. */
const REJECT_CODES: readonly string[] = ['BERTH_ERR_CIRCUIT_OPEN', 'BERTH_ERR_OVERLOADED', 'BERTH_ERR_RATE_LIMITED', 'BERTH_ERR_UNAUTHENTICATED', 'BERTH_ERR_FORBIDDEN', 'BERTH_ERR_METHOD_NOT_ALLOWED', 'BERTH_ERR_BODY_TOO_LARGE'];
/** Values of the `reason` label of ejections. */
export const OUTLIER_REASONS = ['consecutive-errors', 'consecutive-gateway-errors', 'latency'] as const;

/** One circuit breaker as the metrics see it (transitions are rare: a Map, not the hot path). */
interface BreakerStats {
  labels: { group: string; service: string; version: string; instance: string };
  state: BreakerStateName;
  opened: number;
}

/** The part of the catalog metrics read: its snapshot. */
export interface MetricsCatalog {
  list(): readonly InstanceRecord[];
}

export interface MetricsDeps {
  catalog: MetricsCatalog;
  /** This node's name: per-instance series cover the instances this node runs, so a shared catalog yields each series once. */
  nodeName: string;
  /** What each instance uses and may use (src/supervisor/isolation/usage.ts); without it, no usage or limit series. */
  usage?: UsageSource;
}

/**
 * What the gateway observed for one route (group, service, version), in plain
 * numbers: the hot path only adds to them; the registry reads them at scrape
 * time. Kept for the node's lifetime: routes come from the manifest and the
 * registrations, so there are few, and a counter must not vanish and reappear.
 */
class RouteStats {
  /** By CODE_CLASSES index. */
  readonly requests = new Float64Array(CODE_CLASSES.length);
  /** Non-cumulative counts per REQUEST_DURATION_BUCKETS bound; the extra last slot counts what is above the highest bound. */
  readonly durations = new Float64Array(REQUEST_DURATION_BUCKETS.length + 1);
  durationSum = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** By UPSTREAM_FAILURE_KINDS index. */
  readonly failures = new Float64Array(UPSTREAM_FAILURE_KINDS.length);
  /** By RETRY_REASONS index. */
  readonly retries = new Float64Array(RETRY_REASONS.length);
  retryBudgetExhausted = 0;
  /** By REJECT_REASONS index. */
  readonly rejected = new Float64Array(REJECT_REASONS.length);
  /** By OUTLIER_REASONS index. */
  readonly ejections = new Float64Array(OUTLIER_REASONS.length);
  /** Instance ids ejected now. */
  readonly ejected = new Set<string>();

  constructor(
    readonly group: string,
    readonly service: string,
    readonly version: string,
  ) {}
}

/**
 * The node's metrics, and the gateway's observer.
 *
 * requestFinished runs on the gateway's hot path, once per request. It does
 * not go through prom-client: a labelled prom-client child hashes its labels
 * and allocates on every inc/observe (measured with prom-client 15 on Node 20:
 * 2–3 µs and a young-generation GC every ~1,600 requests for the five
 * updates a request makes, against about 55 ns and no GC here). Instead it
 * finds the route's RouteStats through three Map lookups on strings it
 * already holds (no key is built) and adds to numbers; the registry reads
 * them when scraped.
 */
export class Metrics implements GatewayObserver {
  readonly #registry = new Registry();
  readonly #catalog: MetricsCatalog;
  readonly #nodeName: string;

  /** group → service → version → stats. Unrouted requests are under '' → '' → ''. */
  readonly #routes = new Map<string, Map<string, Map<string, RouteStats>>>();
  /** The same stats in creation order, for scrapes. */
  readonly #stats: RouteStats[] = [];
  readonly #unrouted: RouteStats;
  #inFlight = 0;
  readonly #breakers = new Map<string, BreakerStats>();

  readonly #connectionsRefused: Counter<LabelName>;
  readonly #routeTableRebuild: Histogram<LabelName>;
  readonly #routeTableRoutes: Gauge<LabelName>;
  readonly #routeTableInstances: Gauge<LabelName>;

  constructor(deps: MetricsDeps) {
    this.#catalog = deps.catalog;
    this.#nodeName = deps.nodeName;
    this.#unrouted = this.#routeStats('', '', '');
    const registers = [this.#registry];
    const stats = this.#stats;

    // Gateway: values live in RouteStats; each collect copies them in at scrape time.
    new Counter<LabelName>({
      ...definition(MetricNames.gatewayRequests),
      registers,
      collect() {
        this.reset();
        for (const s of stats) {
          for (let i = 0; i < CODE_CLASSES.length; i++) {
            const count = s.requests[i]!;
            if (count > 0) this.inc({ group: s.group, service: s.service, version: s.version, code_class: CODE_CLASSES[i]! }, count);
          }
        }
      },
    });
    this.#registry.registerMetric(new RouteDurationHistogram(MetricNames.gatewayRequestDuration, stats) as unknown as Metric);
    const inFlight = (): number => this.#inFlight;
    new Gauge<LabelName>({
      ...definition(MetricNames.gatewayRequestsInFlight),
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    // Versions of one service add up into one series (inc adds to an existing series).
    new Counter<LabelName>({
      ...definition(MetricNames.gatewayRequestBytes),
      registers,
      collect() {
        this.reset();
        for (const s of stats) this.inc({ group: s.group, service: s.service }, s.bytesIn);
      },
    });
    new Counter<LabelName>({
      ...definition(MetricNames.gatewayResponseBytes),
      registers,
      collect() {
        this.reset();
        for (const s of stats) this.inc({ group: s.group, service: s.service }, s.bytesOut);
      },
    });
    new Counter<LabelName>({
      ...definition(MetricNames.gatewayUpstreamFailures),
      registers,
      collect() {
        this.reset();
        for (const s of stats) {
          for (let i = 0; i < UPSTREAM_FAILURE_KINDS.length; i++) {
            const count = s.failures[i]!;
            if (count > 0) this.inc({ group: s.group, service: s.service, version: s.version, kind: UPSTREAM_FAILURE_KINDS[i]! }, count);
          }
        }
      },
    });

    const counterOf = (def: MetricDefinition, add: (counter: Counter<LabelName>, s: RouteStats) => void): void => {
      new Counter<LabelName>({
        ...definition(def),
        registers,
        collect() {
          this.reset();
          for (const s of stats) add(this, s);
        },
      });
    };
    counterOf(MetricNames.gatewayRetries, (c, s) => {
      for (let i = 0; i < RETRY_REASONS.length; i++) if (s.retries[i]! > 0) c.inc({ group: s.group, service: s.service, version: s.version, reason: RETRY_REASONS[i]! }, s.retries[i]);
    });
    counterOf(MetricNames.gatewayRetryBudgetExhausted, (c, s) => {
      if (s.retryBudgetExhausted > 0) c.inc({ group: s.group, service: s.service, version: s.version }, s.retryBudgetExhausted);
    });
    counterOf(MetricNames.gatewayRejected, (c, s) => {
      for (let i = 0; i < REJECT_REASONS.length; i++) if (s.rejected[i]! > 0) c.inc({ group: s.group, service: s.service, version: s.version, reason: REJECT_REASONS[i]! }, s.rejected[i]);
    });
    counterOf(MetricNames.outlierEjections, (c, s) => {
      for (let i = 0; i < OUTLIER_REASONS.length; i++) if (s.ejections[i]! > 0) c.inc({ group: s.group, service: s.service, version: s.version, reason: OUTLIER_REASONS[i]! }, s.ejections[i]);
    });
    new Gauge<LabelName>({
      ...definition(MetricNames.outlierEjected),
      registers,
      collect() {
        this.reset();
        for (const s of stats) if (s.version !== '') this.set({ group: s.group, service: s.service, version: s.version }, s.ejected.size);
      },
    });
    const breakers = this.#breakers;
    new Gauge<LabelName>({
      ...definition(MetricNames.circuitBreakerState),
      registers,
      collect() {
        this.reset();
        for (const b of breakers.values()) this.set({ ...b.labels, state: b.state }, 1);
      },
    });
    new Counter<LabelName>({
      ...definition(MetricNames.circuitBreakerOpened),
      registers,
      collect() {
        this.reset();
        for (const b of breakers.values()) this.inc(b.labels, b.opened);
      },
    });

    // A refused connection is the flood case, not the hot path: plain prom-client.
    this.#connectionsRefused = new Counter<LabelName>({ ...definition(MetricNames.gatewayConnectionsRefused), registers });

    // Route table: updated once per compile, off the hot path, so plain prom-client.
    this.#routeTableRebuild = new Histogram<LabelName>({
      ...definition(MetricNames.routeTableRebuild),
      buckets: [...ROUTE_TABLE_REBUILD_BUCKETS],
      registers,
    });
    this.#routeTableRoutes = new Gauge<LabelName>({ ...definition(MetricNames.routeTableRoutes), registers });
    this.#routeTableInstances = new Gauge<LabelName>({ ...definition(MetricNames.routeTableInstances), registers });

    // Catalog: computed from the snapshot at scrape time, so never stale and never out of step with the admin API.
    const ownInstances = (): InstanceRecord[] => this.#ownInstances();
    new Gauge<LabelName>({
      ...definition(MetricNames.instanceStatus),
      registers,
      collect() {
        this.reset();
        for (const r of ownInstances()) this.set({ ...instanceLabels(r), status: r.status }, 1);
      },
    });
    new Gauge<LabelName>({
      ...definition(MetricNames.instanceUp),
      registers,
      collect() {
        this.reset();
        for (const r of ownInstances()) this.set(instanceLabels(r), r.status === 'passing' ? 1 : 0);
      },
    });
    // A counter: the catalog's `restarts` only grows for an instance id (it survives the
    // instance's process restarts and the node's), so increase() and rate() apply.
    new Counter<LabelName>({
      ...definition(MetricNames.instanceRestarts),
      registers,
      collect() {
        this.reset();
        for (const r of ownInstances()) this.inc(instanceLabels(r), r.restarts);
      },
    });
    // Usage and limits: the sampler's latest snapshot, read at scrape time (a scrape never reads /proc).
    // A series is absent, not 0, when there is no sample yet or no limit.
    const usage = deps.usage;
    const instanceGauge = (def: MetricDefinition, read: (id: string) => number | null | undefined): void => {
      new Gauge<LabelName>({
        ...definition(def),
        registers,
        collect() {
          this.reset();
          if (usage === undefined) return;
          for (const r of ownInstances()) {
            const v = read(r.id);
            if (v !== null && v !== undefined) this.set(instanceLabels(r), v);
          }
        },
      });
    };
    instanceGauge(MetricNames.instanceCpuPercent, (id) => usage?.usage(id)?.cpuPercent);
    instanceGauge(MetricNames.instanceMemoryRss, (id) => usage?.usage(id)?.rssBytes);
    instanceGauge(MetricNames.instanceOpenFds, (id) => usage?.usage(id)?.openFds);
    instanceGauge(MetricNames.instanceThreads, (id) => usage?.usage(id)?.threads);
    instanceGauge(MetricNames.instanceProcesses, (id) => usage?.usage(id)?.processes);
    instanceGauge(MetricNames.instanceMemoryLimit, (id) => usage?.limits(id)?.memoryBytes);
    instanceGauge(MetricNames.instanceCpuLimit, (id) => usage?.limits(id)?.cpu);
    instanceGauge(MetricNames.instancePidsLimit, (id) => usage?.limits(id)?.pids);

    const catalog = this.#catalog;
    new Gauge<LabelName>({
      ...definition(MetricNames.catalogInstances),
      registers,
      collect() {
        const counts = new Map<string, number>(INSTANCE_STATUSES.map((s) => [s, 0]));
        for (const r of catalog.list()) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
        for (const [status, count] of counts) this.set({ status }, count);
      },
    });

    collectDefaultMetrics({ register: this.#registry, prefix: METRIC_PREFIX });
  }

  /** The Content-Type of `text()`: Prometheus text exposition format 0.0.4. */
  get contentType(): string {
    return this.#registry.contentType;
  }

  /** Every metric in Prometheus text format, catalog series computed now. */
  text(): Promise<string> {
    return this.#registry.metrics();
  }

  requestStarted(): void {
    this.#inFlight++;
  }

  requestFinished(record: RequestRecord): void {
    this.#inFlight--;
    // Only a request that reached a version has a route. The router may name the group or service a
    // request got as far as; they are left out too, so every unrouted request lands in one series.
    const stats = record.version === null ? this.#unrouted : this.#routeStats(record.group ?? '', record.service ?? '', record.version);
    const status = record.status;
    stats.requests[status >= 500 ? 3 : status >= 400 ? 2 : status >= 300 ? 1 : 0]!++;
    const seconds = record.durationMs / 1000;
    let bucket = 0;
    while (bucket < REQUEST_DURATION_BUCKETS.length && seconds > REQUEST_DURATION_BUCKETS[bucket]!) bucket++;
    stats.durations[bucket]!++;
    stats.durationSum += seconds;
    stats.bytesIn += record.bytesIn;
    stats.bytesOut += record.bytesOut;
  }

  upstreamFailed(kind: UpstreamFailure, route: { group: string; service: string; version: string; instance: string }): void {
    // The instance is left out of the labels: instance ids come and go with scaling; the access log names it.
    const stats = this.#routeStats(route.group, route.service, route.version);
    stats.failures[kind === 'connect' ? 0 : kind === 'timeout' ? 1 : 2]!++;
  }

  retried(route: RouteRef, reason: RetryReason): void {
    const i = reason === 'connect' ? 0 : reason === 'reset' ? 1 : reason === 'timeout' ? 2 : 3;
    this.#routeStats(route.group, route.service, route.version).retries[i]!++;
  }

  retryRefused(route: RouteRef): void {
    this.#routeStats(route.group, route.service, route.version).retryBudgetExhausted++;
  }

  rejected(route: RouteRef, code: string): void {
    const i = REJECT_CODES.indexOf(code);
    if (i !== -1) this.#routeStats(route.group, route.service, route.version).rejected[i]!++;
  }

  breakerChanged(scope: { group: string; service: string; version?: string; instance?: string }, _from: BreakerStateName, to: BreakerStateName): void {
    const labels = { group: scope.group, service: scope.service, version: scope.version ?? '', instance: scope.instance ?? '' };
    const key = `${labels.group}\0${labels.service}\0${labels.version}\0${labels.instance}`;
    let stats = this.#breakers.get(key);
    if (!stats) {
      stats = { labels, state: 'closed', opened: 0 };
      this.#breakers.set(key, stats);
    }
    stats.state = to;
    if (to === 'open') stats.opened++;
  }

  outlierChanged(scope: RouteRef & { instance: string }, kind: 'ejected' | 'returned', reason: string | undefined): void {
    const stats = this.#routeStats(scope.group, scope.service, scope.version);
    if (kind === 'returned') {
      stats.ejected.delete(scope.instance);
      return;
    }
    stats.ejected.add(scope.instance);
    const i = OUTLIER_REASONS.indexOf(reason as (typeof OUTLIER_REASONS)[number]);
    if (i >= 0) stats.ejections[i]!++;
  }

  connectionRefused(reason: 'total' | 'per-ip'): void {
    this.#connectionsRefused.inc({ reason });
  }

  routeTableBuilt(info: { durationMs: number; routes: number; instances: number }): void {
    this.#routeTableRebuild.observe(info.durationMs / 1000);
    this.#routeTableRoutes.set(info.routes);
    this.#routeTableInstances.set(info.instances);
  }

  #routeStats(group: string, service: string, version: string): RouteStats {
    let services = this.#routes.get(group);
    if (services === undefined) {
      services = new Map();
      this.#routes.set(group, services);
    }
    let versions = services.get(service);
    if (versions === undefined) {
      versions = new Map();
      services.set(service, versions);
    }
    let stats = versions.get(version);
    if (stats === undefined) {
      stats = new RouteStats(group, service, version);
      versions.set(version, stats);
      this.#stats.push(stats);
    }
    return stats;
  }

  /** This node's instances that are meant to run: a stopped record is history (`berth status --all`), not an instance to watch. */
  #ownInstances(): InstanceRecord[] {
    return this.#catalog.list().filter((r) => r.node === this.#nodeName && r.status !== 'stopped');
  }
}

function definition(def: MetricDefinition): { name: string; help: string; labelNames: LabelName[] } {
  return { name: def.name, help: def.help, labelNames: [...def.labelNames] };
}

function instanceLabels(r: InstanceRecord): Record<'group' | 'service' | 'version' | 'instance' | 'node', string> {
  return { group: r.group, service: r.service, version: r.version, instance: r.id, node: r.node };
}

/** One exported sample, in the shape prom-client's registry renders. */
interface Sample {
  metricName: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * `berth_gateway_request_duration_seconds`, read from RouteStats. prom-client's
 * Histogram can only be fed one observation at a time (the cost above) and
 * has no way to set bucket counts; its registry needs no more from a metric
 * than `name`, `help`, `type` and `get()`, so this gives it the samples.
 */
class RouteDurationHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #stats: readonly RouteStats[];
  readonly #le = [...REQUEST_DURATION_BUCKETS.map(String), '+Inf'];

  constructor(def: MetricDefinition, stats: readonly RouteStats[]) {
    this.name = def.name;
    this.help = def.help;
    this.#stats = stats;
  }

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    const values: Sample[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const s of this.#stats) {
      let count = 0;
      for (const n of s.durations) count += n;
      // A route seen only through upstreamFailed has no finished request yet: no histogram for it.
      if (count === 0) continue;
      const labels = { group: s.group, service: s.service, version: s.version };
      let cumulative = 0;
      for (let i = 0; i < this.#le.length; i++) {
        cumulative += s.durations[i]!;
        values.push({ metricName: bucketName, labels: { ...labels, le: this.#le[i]! }, value: cumulative });
      }
      values.push({ metricName: `${this.name}_sum`, labels, value: s.durationSum }, { metricName: `${this.name}_count`, labels, value: count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  /** The values belong to RouteStats, which only grow: nothing to reset here. */
  reset(): void {}
}
