import type { InstanceRecord } from '../catalog/types.js';
import type { EndpointSpec, GroupSpec, ServiceSpec } from '../manifest/types.js';
import { compareSemver } from '../manifest/semver.js';
import { createBalancer, type Balancer } from './balancers/balancer.js';
import type { ServiceRuntime } from './service-runtime.js';
import { Target } from './target.js';

/** One version of a service with the balancer over its passing instances (less those ejected, unless in panic). */
export interface VersionRoute {
  version: string;
  major: number;
  balancer: Balancer;
  /** Instances the balancer picks from. */
  instances: number;
  /** Passing instances left out because outlier detection ejected them. */
  ejected: number;
  /** Too few left un-ejected: the balancer spreads over all passing instances, ejected ones too. */
  panic: boolean;
}

export interface ServiceRoute {
  group: string;
  service: string;
  stable: string | null;
  /** Its policies' live state (breakers, budget, limits, detectors): outlives tables. */
  runtime: ServiceRuntime;
  /** Highest version first. */
  versions: VersionRoute[];
  /** The highest version of each major, for `/v<major>/` paths. */
  byMajor: Map<number, VersionRoute>;
  byVersion: Map<string, VersionRoute>;
}

export interface GroupRoute {
  name: string;
  endpoint: EndpointSpec;
  services: Map<string, ServiceRoute>;
}

/**
 * The compiled, immutable routing state. Built from the manifest's groups and
 * the catalog snapshot whenever either changes, then swapped in one
 * assignment; a request keeps the table it started with.
 */
export interface RouteTable {
  /** Path-prefix groups, longest prefix first. */
  prefixes: { prefix: string; group: GroupRoute }[];
  hosts: Map<string, GroupRoute>;
  ports: Map<number, GroupRoute>;
  routes: number;
  instances: number;
  /** Ids of the instances this table routes to. */
  live: Set<string>;
}

export interface CompileOptions {
  groups: readonly GroupSpec[];
  instances: readonly InstanceRecord[];
  /** Targets of the previous table by instance id, reused so their in-flight counts carry over. */
  targets: Map<string, Target>;
  /** The policy state of a service, created on first sight and given the spec's policies. */
  runtimeOf: (spec: ServiceSpec) => ServiceRuntime;
  /** performance.now() of this compile: when an instance entering rotation starts its slow start. */
  now: number;
  random?: () => number;
}

/** Only passing instances get requests: not starting, warning, critical, draining, stopped or failed. */
const ROUTABLE = 'passing';

export function compileRouteTable(options: CompileOptions): RouteTable {
  const { groups, targets } = options;
  const live = new Set<string>();
  const passing = new Map<string, InstanceRecord[]>();
  // Every group/service/version the catalog knows (stopped history aside): a route exists for it,
  // answering 503 while none of its instances passes, rather than 404 as if it never existed.
  const known = new Set<string>();
  for (const record of options.instances) {
    if (record.status === 'stopped') continue;
    const key = `${record.group}\0${record.service}\0${record.version}`;
    known.add(key);
    if (record.status !== ROUTABLE || record.port === 0) continue;
    const list = passing.get(key);
    if (list) list.push(record);
    else passing.set(key, [record]);
  }

  const table: RouteTable = { prefixes: [], hosts: new Map(), ports: new Map(), routes: 0, instances: 0, live };
  for (const spec of groups) {
    const group: GroupRoute = { name: spec.name, endpoint: spec.endpoint, services: new Map() };
    const services = new Map(spec.services.map((s) => [s.name, s]));
    // Instances registered from outside into a declared group, under a service the manifest does not name.
    for (const key of known) {
      const [g, s] = key.split('\0') as [string, string];
      if (g === spec.name && !services.has(s)) services.set(s, externalService(spec, s));
    }
    for (const service of services.values()) {
      group.services.set(service.name, compileService(spec.name, service, passing, known, live, options));
    }
    table.routes += group.services.size;
    if (spec.endpoint.kind === 'path') table.prefixes.push({ prefix: spec.endpoint.prefix, group });
    else if (spec.endpoint.kind === 'host') table.hosts.set(spec.endpoint.host, group);
    else table.ports.set(spec.endpoint.port, group);
  }
  table.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  table.instances = live.size;
  // Forget targets of instances that left, once nothing is in flight on them (draining waits on those).
  for (const [id, target] of targets) {
    if (live.has(id)) continue;
    target.routed = false;
    if (target.inflight === 0) targets.delete(id);
  }
  return table;
}

function compileService(group: string, spec: ServiceSpec, passing: Map<string, InstanceRecord[]>, known: Set<string>, live: Set<string>, options: CompileOptions): ServiceRoute {
  const { targets, now } = options;
  const runtime = options.runtimeOf(spec);
  const names = new Set(spec.versions.map((v) => v.version));
  // Versions registered from outside (not in the manifest) are routable too.
  const prefix = `${group}\0${spec.name}\0`;
  for (const key of known) if (key.startsWith(prefix)) names.add(key.slice(prefix.length));

  const versions: VersionRoute[] = [];
  const secure = spec.upstreamTls !== null;
  for (const version of [...names].sort(compareSemver).reverse()) {
    const records = passing.get(prefix + version) ?? [];
    const versionTargets = records.map((r) => {
      let target = targets.get(r.id);
      if (!target || target.port !== r.port || target.address !== r.address || target.secure !== secure) {
        target = new Target(r.id, r.address, r.port, r.weight, { now, secure });
        targets.set(r.id, target);
      } else if (!target.routed) {
        // Back in rotation (passing again): its slow start begins again.
        target.passingSince = now;
      }
      target.weight = r.weight;
      target.routed = true;
      runtime.equip(target, version);
      live.add(r.id);
      return target;
    });
    const detector = runtime.detector(version, versionTargets.map((t) => t.id));
    const panic = detector?.panic ?? false;
    const eligible = detector && !panic ? versionTargets.filter((t) => !detector.isEjected(t.id)) : versionTargets;
    const balancer = createBalancer(spec.policies.balancer, eligible, { slowStartMs: spec.policies.slowStartMs, ...(options.random ? { random: options.random } : {}) });
    versions.push({ version, major: majorOf(version), balancer, instances: eligible.length, ejected: versionTargets.length - eligible.length, panic });
  }
  runtime.retainVersions(names);
  const byMajor = new Map<number, VersionRoute>();
  const byVersion = new Map<string, VersionRoute>();
  for (const v of versions) {
    byVersion.set(v.version, v);
    // Highest first, so the first of each major is its highest release with instances.
    const known = byMajor.get(v.major);
    if (!known || (known.instances === 0 && v.instances > 0)) byMajor.set(v.major, v);
  }
  return { group, service: spec.name, stable: spec.stable || null, runtime, versions, byMajor, byVersion };
}

/**
 * A service known only from external registrations: no stable version, the
 * highest passing one serves; the group's policies apply (its authentication
 * above all: registering a service must not open a way around it).
 */
function externalService(group: GroupSpec, name: string): ServiceSpec {
  return { group: group.name, name, stable: '', policies: group.policies, routes: [], upstreamTls: null, versions: [] };
}

function majorOf(version: string): number {
  return Number(version.slice(0, version.indexOf('.')));
}
