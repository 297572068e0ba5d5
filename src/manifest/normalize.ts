/**
 * From a manifest that passed the schema and the rules to the `NodeSpec` the
 * rest of Berth runs on: every default applied, every path absolute, every
 * version its own entry.
 */
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parseCommandLine } from './command-line.js';
import { toPolicies } from './policies.js';
import { DEFAULT_ADMIN, DEFAULT_BACKOFF_MS, DEFAULT_GATEWAY, DEFAULT_INTERVAL_MS, DEFAULT_MAX_BACKOFF_MS, DEFAULT_TIMEOUT_MS } from './rules.js';
import type { EndpointInput, GroupInput, HealthInput, ManifestInput, RestartInput, ServiceInput } from './schema.js';
import { compareSemver, isPrerelease } from './semver.js';
import type { CheckSpec, EndpointSpec, GroupSpec, HealthSpec, NodeSpec, RestartSpec, ServiceSpec, VersionSpec } from './types.js';

export const DEFAULT_VERSION = '0.0.0';

export function normalize(input: ManifestInput, file: string): NodeSpec {
  const dir = dirname(file);
  return {
    file,
    dir,
    nodeName: input.node ?? hostname(),
    gateway: { listen: input.gateway?.listen ?? { ...DEFAULT_GATEWAY } },
    admin: { listen: input.admin?.listen ?? { ...DEFAULT_ADMIN } },
    dataDir: resolve(dir, input.dataDir ?? '.berth'),
    instanceHost: input.instanceHost ?? '127.0.0.1',
    logLevel: input.log?.level ?? 'info',
    logRedact: [...new Set(input.log?.redact ?? [])],
    groups: Object.entries(input.groups).map(([name, group]) => toGroup(name, group, dir)),
  };
}

function toGroup(name: string, group: GroupInput, dir: string): GroupSpec {
  return {
    name,
    endpoint: toEndpoint(name, group.endpoint),
    services: Object.entries(group.services).map(([service, spec]) => toService(name, group, service, spec, dir)),
  };
}

function toEndpoint(group: string, endpoint: EndpointInput | undefined): EndpointSpec {
  if (endpoint === undefined) return { kind: 'path', prefix: `/${group}` };
  if (typeof endpoint === 'string') return { kind: 'path', prefix: trimSlash(endpoint) };
  if (endpoint.path !== undefined) return { kind: 'path', prefix: trimSlash(endpoint.path) };
  if (endpoint.host !== undefined) return { kind: 'host', host: endpoint.host };
  if (endpoint.port !== undefined) return { kind: 'port', port: endpoint.port };
  throw new Error(`unreachable: group ${group} has an empty endpoint that the rules let through`);
}

function trimSlash(prefix: string): string {
  return prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix;
}

/** The default stable version: the highest release, or the highest prerelease when there are only prereleases. */
function defaultStable(sorted: readonly string[]): string {
  const releases = sorted.filter((v) => !isPrerelease(v));
  return releases[releases.length - 1] ?? sorted[sorted.length - 1] ?? DEFAULT_VERSION;
}

function toService(group: string, groupInput: GroupInput, name: string, service: ServiceInput, dir: string): ServiceSpec {
  const overrides = service.versions ?? { [service.version ?? DEFAULT_VERSION]: {} };
  const keys = Object.keys(overrides).sort(compareSemver);
  const stable = service.stable ?? defaultStable(keys);
  const versions = keys.map((version): VersionSpec => {
    const own = overrides[version] ?? {};
    const command =
      own.command !== undefined
        ? parseCommandLine(own.command, own.args)
        : parseCommandLine(service.command ?? '', own.args ?? service.args);
    return {
      key: `${group}/${name}@${version}`,
      group,
      service: name,
      version,
      stable: version === stable,
      command,
      cwd: resolve(dir, own.cwd ?? service.cwd ?? '.'),
      env: { ...service.env, ...own.env },
      replicas: own.replicas ?? service.replicas ?? 1,
      // health and restart are replaced as a whole: a version with its own check does not inherit half of another.
      health: toHealth(own.health !== undefined ? own.health : service.health),
      restart: toRestart(own.restart ?? service.restart),
      stop: {
        signal: own.stopSignal ?? service.stopSignal ?? 'SIGTERM',
        drainTimeoutMs: own.drainTimeout ?? service.drainTimeout ?? 10_000,
        stopTimeoutMs: own.stopTimeout ?? service.stopTimeout ?? 10_000,
      },
    };
  });
  return { group, name, stable, policies: toPolicies(groupInput, service), versions };
}

function toHealth(health: HealthInput | undefined): HealthSpec {
  const settings = typeof health === 'object' ? health : {};
  let check: CheckSpec;
  if (health === false) check = { kind: 'none' };
  else if (settings.http !== undefined) {
    check = { kind: 'http', path: settings.http, method: settings.method ?? 'GET', headers: settings.headers ?? {} };
    if (settings.port !== undefined) check.port = settings.port;
  } else if (settings.tcp !== undefined) check = settings.tcp === true ? { kind: 'tcp' } : { kind: 'tcp', port: settings.tcp };
  else if (settings.command !== undefined) check = { kind: 'command', command: settings.command };
  else check = { kind: 'tcp' };
  const intervalMs = settings.interval ?? DEFAULT_INTERVAL_MS;
  return {
    check,
    intervalMs,
    // A check may not outlive its interval; a short interval brings the default timeout down with it.
    timeoutMs: settings.timeout ?? Math.min(DEFAULT_TIMEOUT_MS, intervalMs),
    healthyThreshold: settings.healthyThreshold ?? 1,
    unhealthyThreshold: settings.unhealthyThreshold ?? 3,
    startPeriodMs: settings.startPeriod ?? 10_000,
    restartAfterMs: settings.restartAfter ?? 30_000,
  };
}

function toRestart(restart: RestartInput | undefined): RestartSpec {
  const settings = typeof restart === 'object' ? restart : {};
  return {
    policy: typeof restart === 'string' ? restart : (settings.policy ?? 'always'),
    backoffInitialMs: settings.backoff ?? DEFAULT_BACKOFF_MS,
    backoffMaxMs: settings.maxBackoff ?? DEFAULT_MAX_BACKOFF_MS,
    backoffFactor: settings.factor ?? 1.5,
    stableAfterMs: settings.stableAfter ?? 10_000,
    maxRestarts: settings.maxRestarts ?? 16,
  };
}
