/**
 * From a manifest that passed the schema and the rules to the `NodeSpec` the
 * rest of Berth runs on: every default applied, every path absolute, every
 * version its own entry.
 */
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parseCommandLine } from './command-line.js';
import { applyEdge, toPolicies } from './policies.js';
import { DEFAULT_ADMIN, DEFAULT_BACKOFF_MS, DEFAULT_GATEWAY, DEFAULT_HTTPS, DEFAULT_INTERVAL_MS, DEFAULT_MAX_BACKOFF_MS, DEFAULT_TIMEOUT_MS } from './rules.js';
import type { EndpointInput, GatewayInput, GroupInput, HealthInput, JwtIssuerInput, ManifestInput, RestartInput, SecretRefInput, ServiceInput, UpstreamTlsInput } from './schema.js';
import { compareSemver, isPrerelease } from './semver.js';
import type {
  CheckSpec,
  EdgeSpec,
  EndpointSpec,
  GroupSpec,
  HealthSpec,
  IsolationSpec,
  JwtIssuerSpec,
  NodeSpec,
  RestartSpec,
  SecretRef,
  ServiceSpec,
  TlsListenerSpec,
  UpstreamTlsSpec,
  VersionSpec,
} from './types.js';

/** The gateway's connection-level protections when the manifest sets none (docs/security.md). */
export const DEFAULT_EDGE_SPEC: EdgeSpec = {
  trustedProxies: [],
  connections: { max: 10_000, perIp: 256, maxRequests: 1_000 },
  timeouts: { headersMs: 10_000, requestMs: 300_000, idleMs: 60_000, keepAliveMs: 5_000 },
  maxHeaderBytes: 16 * 1024,
  maxHeaders: 100,
};
/** HSTS when the manifest says `hsts: true`: 180 days, this host only. */
const DEFAULT_HSTS_MAX_AGE_S = 180 * 86_400;

export const DEFAULT_VERSION = '0.0.0';

export function normalize(input: ManifestInput, file: string): NodeSpec {
  const dir = dirname(file);
  return {
    file,
    dir,
    nodeName: input.node ?? hostname(),
    gateway: {
      listen: input.gateway?.listen ?? { ...DEFAULT_GATEWAY },
      tls: input.gateway?.tls === undefined ? null : toTlsListener(input.gateway.tls, dir),
      edge: toEdgeSpec(input.gateway),
    },
    auth: {
      jwt: Object.entries(input.auth?.jwt ?? {}).map(([name, issuer]) => toIssuer(name, issuer, dir)),
      identityKey: input.auth?.identityKey === undefined ? null : toSecretRef(input.auth.identityKey, dir),
    },
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
    policies: toPolicies(group, {}),
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
      ...splitEnv({ ...service.env, ...own.env }, dir),
      replicas: own.replicas ?? service.replicas ?? 1,
      isolation: toIsolation(own, service, dir),
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
  const policies = toPolicies(groupInput, service);
  return {
    group,
    name,
    stable,
    policies,
    routes: (service.routes ?? []).map(({ path, ...edge }) => ({ path, edge: applyEdge(policies.edge, edge) })),
    upstreamTls: service.tls === undefined || service.tls === false ? null : toUpstreamTls(service.tls, dir),
    versions,
  };
}

type RunInput = Pick<ServiceInput, 'env' | 'user' | 'resources' | 'sandbox'>;

/** Plain values, and secrets by reference (read at each start, never kept in the spec). */
function splitEnv(env: NonNullable<RunInput['env']>, dir: string): { env: Record<string, string>; secretEnv: Record<string, SecretRef> } {
  const plain: Record<string, string> = {};
  const secretEnv: Record<string, SecretRef> = {};
  for (const [name, value] of Object.entries(env)) {
    if (typeof value === 'string') plain[name] = value;
    else secretEnv[name] = toSecretRef(value.secret, dir);
  }
  return { env: plain, secretEnv };
}

/** A version's user, resources and sandbox: its own, else its service's (each replaced as a whole). */
function toIsolation(own: RunInput, service: RunInput, dir: string): IsolationSpec {
  const user = own.user ?? service.user;
  const resources = own.resources ?? service.resources ?? {};
  const sandbox = own.sandbox ?? service.sandbox;
  return {
    user:
      user === undefined
        ? null
        : typeof user === 'string'
          ? /^\d+:\d+$/.test(user)
            ? { uid: Number(user.split(':')[0]), gid: Number(user.split(':')[1]) }
            : { name: user }
          : { uid: user.uid, gid: user.gid },
    resources: {
      memoryBytes: resources.memory ?? null,
      cpu: resources.cpu ?? null,
      pids: resources.pids ?? null,
      openFiles: resources.openFiles ?? null,
    },
    sandbox: sandbox === undefined || sandbox === false ? null : { writable: (sandbox === true ? [] : (sandbox.writable ?? [])).map((w) => resolve(dir, w)) },
  };
}

function toTlsListener(tls: NonNullable<GatewayInput['tls']>, dir: string): TlsListenerSpec {
  const hsts = tls.hsts;
  return {
    listen: tls.listen ?? { ...DEFAULT_HTTPS },
    certFile: resolve(dir, tls.cert),
    keyFile: resolve(dir, tls.key),
    minVersion: tls.minVersion ?? 'TLSv1.2',
    redirect: tls.redirect ?? false,
    hsts:
      hsts === undefined || hsts === false
        ? null
        : {
            maxAgeSeconds: hsts === true || hsts.maxAge === undefined ? DEFAULT_HSTS_MAX_AGE_S : Math.floor(hsts.maxAge / 1000),
            includeSubDomains: hsts !== true && (hsts.includeSubDomains ?? false),
            preload: hsts !== true && (hsts.preload ?? false),
          },
  };
}

function toEdgeSpec(gateway: GatewayInput | undefined): EdgeSpec {
  const d = DEFAULT_EDGE_SPEC;
  const t = gateway?.timeouts;
  const c = gateway?.connections;
  return {
    trustedProxies: [...new Set(gateway?.trustedProxies ?? [])],
    connections: { max: c?.max ?? d.connections.max, perIp: c?.perIp ?? d.connections.perIp, maxRequests: c?.maxRequests ?? d.connections.maxRequests },
    timeouts: {
      headersMs: t?.headers ?? d.timeouts.headersMs,
      requestMs: t?.request ?? d.timeouts.requestMs,
      idleMs: t?.idle ?? d.timeouts.idleMs,
      keepAliveMs: t?.keepAlive ?? d.timeouts.keepAliveMs,
    },
    maxHeaderBytes: gateway?.maxHeaderSize ?? d.maxHeaderBytes,
    maxHeaders: gateway?.maxHeaders ?? d.maxHeaders,
  };
}

function toIssuer(name: string, input: JwtIssuerInput, dir: string): JwtIssuerSpec {
  let keys: JwtIssuerSpec['keys'];
  if (input.jwks !== undefined) keys = { kind: 'jwks', url: input.jwks, cacheMaxAgeMs: input.cacheMaxAge ?? 600_000, cooldownMs: input.cooldown ?? 30_000 };
  else if (input.jwksFile !== undefined) keys = { kind: 'jwks-file', file: resolve(dir, input.jwksFile) };
  else if (input.publicKey !== undefined) keys = { kind: 'public-key', file: resolve(dir, input.publicKey) };
  else if (input.secret !== undefined) keys = { kind: 'secret', secret: toSecretRef(input.secret, dir) };
  else throw new Error(`unreachable: issuer ${name} has no keys and the rules let it through`);
  return {
    name,
    issuer: input.issuer,
    audience: input.audience === undefined ? [] : typeof input.audience === 'string' ? [input.audience] : input.audience,
    algorithms: [...new Set(input.algorithms)],
    keys,
    clockSkewMs: input.clockSkew ?? 30_000,
    rolesClaim: input.rolesClaim ?? 'roles',
    scopesClaim: input.scopesClaim ?? 'scope',
  };
}

function toSecretRef(input: SecretRefInput, dir: string): SecretRef {
  if (input.env !== undefined) return { env: input.env };
  if (input.file !== undefined) return { file: resolve(dir, input.file) };
  throw new Error('unreachable: a secret with neither env nor file that the rules let through');
}

function toUpstreamTls(input: Exclude<UpstreamTlsInput, false>, dir: string): UpstreamTlsSpec {
  if (input === true) return { verify: true };
  return {
    ...(input.ca !== undefined ? { caFile: resolve(dir, input.ca) } : {}),
    ...(input.cert !== undefined ? { certFile: resolve(dir, input.cert) } : {}),
    ...(input.key !== undefined ? { keyFile: resolve(dir, input.key) } : {}),
    ...(input.serverName !== undefined ? { serverName: input.serverName } : {}),
    verify: input.verify ?? true,
  };
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
