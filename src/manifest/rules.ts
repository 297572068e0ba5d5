/**
 * Rules that relate two or more fields. They run over the raw document, apart
 * from the schema, so that they report even when unrelated parts of the
 * manifest are wrong; each rule looks only at values that are well-formed and
 * stays silent about the rest (the schema already reports those).
 */
import { formatDuration, parseDuration } from '../duration.js';
import { CommandLineError, parseCommandLine } from './command-line.js';
import { describeValue, isPlainMap, type ManifestIssue, type ManifestPath } from './issues.js';
import { formatListen, isLoopbackHost, listenersClash, parseListen } from './listen.js';
import { NAME } from './schema.js';
import { compareSemver, isSemver } from './semver.js';
import type { ListenSpec } from './types.js';

export const DEFAULT_GATEWAY: ListenSpec = { host: '127.0.0.1', port: 8080 };
export const DEFAULT_ADMIN: ListenSpec = { host: '127.0.0.1', port: 8081 };
export const DEFAULT_HTTPS: ListenSpec = { host: '127.0.0.1', port: 8443 };
export const DEFAULT_INTERVAL_MS = 5000;
export const DEFAULT_TIMEOUT_MS = 2000;
export const DEFAULT_BACKOFF_MS = 100;
export const DEFAULT_MAX_BACKOFF_MS = 15_000;

const CHECK_KINDS = ['http', 'tcp', 'command'] as const;
const HTTP_ONLY = ['method', 'headers', 'port'] as const;

export function checkRules(data: Record<string, unknown>): ManifestIssue[] {
  const issues: ManifestIssue[] = [];
  const report = (path: ManifestPath, message: string): void => {
    issues.push({ path, message });
  };

  const gateway = listenerOf(data, 'gateway', DEFAULT_GATEWAY);
  const admin = listenerOf(data, 'admin', DEFAULT_ADMIN);
  if (gateway !== undefined && admin !== undefined && listenersClash(gateway, admin)) {
    report(['admin', 'listen'], `admin listens on ${formatListen(admin)}, the same address as the gateway (${formatListen(gateway)}); give them different ports`);
  }
  // The admin API reaches beyond this machine only when the manifest says so in as many words.
  const adminMap = data.admin;
  if (admin !== undefined && !isLoopbackHost(admin.host) && !(isPlainMap(adminMap) && adminMap.allowRemote === true)) {
    report(['admin', 'listen'], `admin listens on ${formatListen(admin)}, which other machines can reach; listen on a loopback address (127.0.0.1, ::1), or set admin.allowRemote: true to mean it`);
  }

  const https = httpsListenerOf(data);
  if (https !== undefined) {
    for (const [name, other] of [['gateway', gateway], ['admin', admin]] as const) {
      if (other !== undefined && listenersClash(https, other)) report(['gateway', 'tls', 'listen'], `the HTTPS listener ${formatListen(https)} clashes with the ${name} listener (${formatListen(other)}); give it a port of its own`);
    }
  }
  const issuers = issuerRules(data, report);

  const groups = data.groups;
  if (!isPlainMap(groups)) return issues;

  const prefixes = new Map<string, string>();
  const hosts = new Map<string, string>();
  const ports = new Map<number, string>();
  const services = new Map<string, string>();

  for (const [groupName, group] of Object.entries(groups)) {
    if (!isPlainMap(group)) continue;
    const at: ManifestPath = ['groups', groupName];
    const endpoint = group.endpoint;

    // One group, one endpoint: the router must know, from a request alone, which group it is for.
    let prefix: string | undefined;
    let host: string | undefined;
    let port: number | undefined;
    let where: ManifestPath = [...at, 'endpoint'];
    if (endpoint === undefined) {
      prefix = `/${groupName}`;
    } else if (typeof endpoint === 'string') {
      if (endpoint.startsWith('/')) prefix = endpoint;
    } else if (isPlainMap(endpoint)) {
      const kinds = (['path', 'host', 'port'] as const).filter((k) => endpoint[k] !== undefined);
      if (kinds.length === 0) {
        report(where, 'expected one of path, host or port, got a map with none of them');
      } else if (kinds.length > 1) {
        report([...where, kinds[1] as string], `only one of path, host or port may be set, found ${kinds.join(' and ')}`);
      } else if (typeof endpoint.path === 'string' && endpoint.path.startsWith('/')) {
        prefix = endpoint.path;
        where = [...where, 'path'];
      } else if (typeof endpoint.host === 'string') {
        host = endpoint.host.toLowerCase();
        where = [...where, 'host'];
      } else if (typeof endpoint.port === 'number' && Number.isInteger(endpoint.port) && endpoint.port > 0 && endpoint.port <= 65535) {
        port = endpoint.port;
        where = [...where, 'port'];
      }
    }
    if (prefix !== undefined) {
      const key = prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix;
      const owner = prefixes.get(key);
      const shown = endpoint === undefined ? `path prefix "${key}" (the default for group "${groupName}")` : `path prefix "${key}"`;
      if (owner !== undefined) report(where, `${shown} is already the endpoint of group "${owner}"; each group needs its own`);
      else prefixes.set(key, groupName);
    }
    if (host !== undefined) {
      const owner = hosts.get(host);
      if (owner !== undefined) report(where, `host "${host}" is already the endpoint of group "${owner}"; each group needs its own`);
      else hosts.set(host, groupName);
    }
    if (port !== undefined) {
      const owner = ports.get(port);
      if (owner !== undefined) report(where, `port ${port} is already the endpoint of group "${owner}"; each group needs its own`);
      else if (gateway !== undefined && port === gateway.port) report(where, `port ${port} is the gateway's own port (gateway.listen); pick another`);
      else if (admin !== undefined && port === admin.port) report(where, `port ${port} is the admin API's port (admin.listen); pick another`);
      else ports.set(port, groupName);
    }

    if (!isPlainMap(group.services)) continue;
    policyRules(at, group, report);
    edgeRules(at, group, issuers, report);
    for (const [serviceName, service] of Object.entries(group.services)) {
      const servicePath: ManifestPath = [...at, 'services', serviceName];
      if (isPlainMap(service)) {
        policyRules(servicePath, service, report);
        serviceEdgeRules(servicePath, group, service, issuers, report);
      }
      if (NAME.test(serviceName)) {
        // The admin API and the CLI address a service by its name alone.
        const owner = services.get(serviceName);
        if (owner !== undefined) report(servicePath, `service name "${serviceName}" is already used in group "${owner}"; service names must be unique across groups`);
        else services.set(serviceName, groupName);
      }
      if (isPlainMap(service)) checkService(service, servicePath, report);
    }
  }
  return issues;
}

type Report = (path: ManifestPath, message: string) => void;

function checkService(service: Record<string, unknown>, at: ManifestPath, report: Report): void {
  const versions = service.versions;
  if (service.version !== undefined && versions !== undefined) {
    report([...at, 'version'], '"version" and "versions" cannot both be set: use version for a single version, or versions for several');
  }

  if (isSemver(service.stable)) {
    const known = isPlainMap(versions) ? Object.keys(versions) : versions === undefined && (service.version === undefined || isSemver(service.version)) ? [service.version ?? '0.0.0'] : undefined;
    if (known !== undefined && !known.includes(service.stable)) {
      const listed = known.filter(isSemver).sort(compareSemver);
      report([...at, 'stable'], `expected one of the versions ${listed.join(' | ')}, got ${describeValue(service.stable)}`);
    }
  }

  if (service.command === undefined) {
    if (isPlainMap(versions)) {
      const without = Object.entries(versions).filter(([, v]) => !(isPlainMap(v) && v.command !== undefined)).map(([k]) => k);
      if (without.length > 0 && Object.keys(versions).length > 0) {
        report([...at, 'command'], `missing required key "command" (expected a command line here, or one in every version; ${without.map((k) => `"${k}"`).join(', ')} ${without.length === 1 ? 'has' : 'have'} none)`);
      }
    } else if (versions === undefined) {
      report([...at, 'command'], 'missing required key "command" (expected a command line)');
    }
  }

  checkRun(service, at, report);
  if (isPlainMap(versions)) {
    for (const [key, version] of Object.entries(versions)) {
      if (isPlainMap(version)) checkRun(version, [...at, 'versions', key], report);
    }
  }
}

/** The rules for what a service sets and a version may override. */
function checkRun(run: Record<string, unknown>, at: ManifestPath, report: Report): void {
  const command = run.command;
  if (typeof command === 'string' && command.trim() !== '') {
    // A command comes with the args beside it (or none): a version's own command does not inherit the service's args.
    const args = run.args;
    const argv = Array.isArray(args) && args.every((a) => ['string', 'number', 'boolean'].includes(typeof a)) ? args.map(String) : undefined;
    try {
      parseCommandLine(command, argv);
    } catch (err) {
      if (!(err instanceof CommandLineError)) throw err;
      report([...at, 'command'], `expected a command line, got ${describeValue(command)}: ${err.message}`);
    }
  }
  if (isPlainMap(run.health)) checkHealth(run.health, [...at, 'health'], report);
  if (isPlainMap(run.env)) {
    for (const [name, value] of Object.entries(run.env)) if (isPlainMap(value)) secretRules(value.secret, [...at, 'env', name, 'secret'], report);
  }
  if (isPlainMap(run.restart)) checkRestart(run.restart, [...at, 'restart'], report);
}

function checkHealth(health: Record<string, unknown>, at: ManifestPath, report: Report): void {
  // Only well-formed kinds count: a malformed one is the schema's to report, not a second check.
  const kinds = CHECK_KINDS.filter((k) => (k === 'tcp' ? health.tcp === true || typeof health.tcp === 'number' : typeof health[k] === 'string'));
  if (kinds.length > 1) report([...at, kinds[1] as string], `only one of http, tcp or command may be set, found ${kinds.join(' and ')}`);
  if (health.http === undefined) {
    for (const key of HTTP_ONLY) {
      if (health[key] === undefined) continue;
      const hint = key === 'port' && health.tcp !== undefined ? ' (for a tcp check on another port, write tcp: <port>)' : '';
      report([...at, key], `"${key}" applies only to http checks${hint}`);
    }
  }
  const interval = health.interval === undefined ? DEFAULT_INTERVAL_MS : durationOf(health.interval);
  const timeout = durationOf(health.timeout);
  if (interval !== undefined && timeout !== undefined && timeout > interval) {
    report([...at, 'timeout'], `expected a timeout no longer than the interval (${formatDuration(interval)}), got ${describeValue(health.timeout)}`);
  }
}

function checkRestart(restart: Record<string, unknown>, at: ManifestPath, report: Report): void {
  const backoff = restart.backoff === undefined ? DEFAULT_BACKOFF_MS : durationOf(restart.backoff);
  const max = restart.maxBackoff === undefined ? DEFAULT_MAX_BACKOFF_MS : durationOf(restart.maxBackoff);
  if (backoff !== undefined && max !== undefined && backoff > max) {
    const key = restart.maxBackoff === undefined ? 'backoff' : 'maxBackoff';
    report([...at, key], `expected backoff <= maxBackoff, got backoff ${formatDuration(backoff)} and maxBackoff ${formatDuration(max)}`);
  }
}

/** A pair of durations where the second caps the first (backoff ≤ maxBackoff…). */
const DURATION_PAIRS: readonly { policy: string; sub?: string; low: string; high: string }[] = [
  { policy: 'retries', low: 'backoff', high: 'maxBackoff' },
  { policy: 'breaker', sub: 'instance', low: 'openFor', high: 'maxOpenFor' },
  { policy: 'breaker', sub: 'service', low: 'openFor', high: 'maxOpenFor' },
  { policy: 'outlier', low: 'ejectionTime', high: 'maxEjectionTime' },
];

/** Rules inside a group's or a service's policies: pairs of durations in order, a hash balancer with one key. */
function policyRules(at: ManifestPath, owner: Record<string, unknown>, report: (path: ManifestPath, message: string) => void): void {
  for (const pair of DURATION_PAIRS) {
    let map = owner[pair.policy];
    let path: ManifestPath = [...at, pair.policy];
    if (pair.sub !== undefined && isPlainMap(map)) {
      map = map[pair.sub];
      path = [...path, pair.sub];
    }
    if (!isPlainMap(map)) continue;
    const low = durationOf(map[pair.low]);
    const high = durationOf(map[pair.high]);
    // One side given: the other is the default, which may also clash (backoff: 1s with the default maxBackoff of 250ms).
    if (low !== undefined && high !== undefined && low > high) {
      report([...path, pair.high], `expected ${pair.high} no shorter than ${pair.low} (${formatDuration(low)}), got ${describeValue(map[pair.high])}`);
    }
  }
  const hash = isPlainMap(owner.balancer) ? owner.balancer.hash : undefined;
  if (isPlainMap(hash)) {
    const keys = ['header', 'cookie'].filter((k) => hash[k] !== undefined);
    if (keys.length !== 1) report([...at, 'balancer', 'hash'], `expected exactly one of header or cookie, got ${keys.length === 0 ? 'neither' : 'both'}`);
  }
}

/** The HTTPS listener's address when `gateway.tls` is set and well-formed. */
function httpsListenerOf(data: Record<string, unknown>): ListenSpec | undefined {
  const gateway = data.gateway;
  const tls = isPlainMap(gateway) ? gateway.tls : undefined;
  if (!isPlainMap(tls)) return undefined;
  if (tls.listen === undefined) return DEFAULT_HTTPS;
  return typeof tls.listen === 'string' || typeof tls.listen === 'number' ? parseListen(tls.listen) : undefined;
}

const KEY_SOURCES = ['jwks', 'jwksFile', 'publicKey', 'secret'] as const;

/** Each issuer: exactly one key source, algorithms that fit it, a secret given one way. Returns the issuer names. */
function issuerRules(data: Record<string, unknown>, report: Report): Set<string> {
  const names = new Set<string>();
  const auth = data.auth;
  const jwt = isPlainMap(auth) ? auth.jwt : undefined;
  if (isPlainMap(auth)) secretRules(auth.identityKey, ['auth', 'identityKey'], report);
  if (!isPlainMap(jwt)) return names;
  for (const [name, issuer] of Object.entries(jwt)) {
    names.add(name);
    if (!isPlainMap(issuer)) continue;
    const at: ManifestPath = ['auth', 'jwt', name];
    const sources = KEY_SOURCES.filter((k) => issuer[k] !== undefined);
    if (sources.length === 0) report(at, 'missing the keys: expected one of jwks (a URL), jwksFile, publicKey (a PEM file) or secret (for HS256/384/512)');
    else if (sources.length > 1) report([...at, sources[1] as string], `only one of jwks, jwksFile, publicKey or secret may be set, found ${sources.join(' and ')}`);
    secretRules(issuer.secret, [...at, 'secret'], report);
    const algorithms = Array.isArray(issuer.algorithms) ? issuer.algorithms.filter((a): a is string => typeof a === 'string') : [];
    const hmac = algorithms.filter((a) => a.startsWith('HS'));
    // Mixing the two kinds is how an RSA public key ends up verifying an HS256 token (the classic algorithm confusion).
    if (sources.length === 1 && sources[0] === 'secret' && hmac.length < algorithms.length) {
      report([...at, 'algorithms'], `a secret verifies only HS256, HS384 or HS512, got ${algorithms.filter((a) => !a.startsWith('HS')).join(', ')}`);
    } else if (sources.length === 1 && sources[0] !== 'secret' && hmac.length > 0) {
      report([...at, 'algorithms'], `${hmac.join(', ')} needs a shared secret (secret:), not ${sources[0]}; an issuer's algorithms are all HMAC or all public-key`);
    }
  }
  return names;
}

function secretRules(secret: unknown, at: ManifestPath, report: Report): void {
  if (!isPlainMap(secret)) return;
  const ways = ['env', 'file'].filter((k) => secret[k] !== undefined);
  if (ways.length !== 1) report(at, `expected exactly one of env or file, got ${ways.length === 0 ? 'neither' : 'both'}`);
}

/** A group's (or service's, or route's) edge keys on their own: issuers that exist, rules that can hold. */
function edgeRules(at: ManifestPath, owner: Record<string, unknown>, issuers: ReadonlySet<string>, report: Report): void {
  const auth = owner.auth;
  if (isPlainMap(auth)) {
    const jwt = typeof auth.jwt === 'string' ? [auth.jwt] : Array.isArray(auth.jwt) ? auth.jwt.filter((j): j is string => typeof j === 'string') : [];
    for (const name of jwt) {
      if (!issuers.has(name)) report([...at, 'auth', 'jwt'], `no issuer "${name}" under auth.jwt${issuers.size > 0 ? ` (expected one of ${[...issuers].join(', ')})` : ''}`);
    }
  }
  if (Array.isArray(owner.authorize)) {
    owner.authorize.forEach((rule, i) => {
      if (!isPlainMap(rule) || rule.anonymous !== true) return;
      const conditions = ['roles', 'scopes', 'claims'].filter((k) => rule[k] !== undefined);
      if (conditions.length > 0) report([...at, 'authorize', i, 'anonymous'], `an anonymous request has no ${conditions.join(', ')}: a rule that admits anonymous requests cannot require them`);
    });
  }
  if (isPlainMap(owner.tls) && (owner.tls.cert === undefined) !== (owner.tls.key === undefined)) {
    report([...at, 'tls', owner.tls.cert === undefined ? 'cert' : 'key'], 'mutual TLS needs both cert and key');
  }
}

/**
 * Default deny: where authentication is required (by the group, the service
 * or a route), some rule must say who is admitted, or every request would be
 * refused. Saying nothing is taken for a mistake, not for "nobody".
 */
function serviceEdgeRules(at: ManifestPath, group: Record<string, unknown>, service: Record<string, unknown>, issuers: ReadonlySet<string>, report: Report): void {
  edgeRules(at, service, issuers, report);
  const groupAt = at.slice(0, 2);
  const check = (where: ManifestPath, layers: readonly { at: ManifestPath; map: Record<string, unknown> }[]): void => {
    // Merged key by key, as policies.ts does: the last layer that sets a key wins, `auth: false` clears the layers below it.
    let auth: { jwt?: unknown; apiKey?: unknown; at: ManifestPath } | undefined;
    let rules: unknown;
    for (const layer of layers) {
      const own = layer.map.auth;
      if (own === false) auth = undefined;
      else if (isPlainMap(own)) auth = { ...(auth ?? {}), ...(own.jwt !== undefined ? { jwt: own.jwt } : {}), ...(own.apiKey !== undefined ? { apiKey: own.apiKey } : {}), at: [...layer.at, 'auth'] };
      if (layer.map.authorize !== undefined) rules = layer.map.authorize;
    }
    if (auth === undefined) return;
    if (auth.jwt === undefined && auth.apiKey !== true) report(auth.at, 'expected jwt (issuer names) or apiKey: true here or in the group, or auth: false for none');
    if (Array.isArray(rules) && rules.length === 0) {
      report(where, 'authentication is required here but the authorize list is empty, so no request would be admitted (default deny); add a rule, such as authorize: [{ path: "/**" }] to admit every authenticated caller');
    } else if (rules === undefined) {
      report(where, 'authentication is required here but no authorize rule says who is admitted (default deny); add authorize rules to the group, the service or the route, such as authorize: [{ path: "/**" }] to admit every authenticated caller');
    }
  };
  const layers = [
    { at: groupAt, map: group },
    { at, map: service },
  ];
  check(at, layers);
  if (Array.isArray(service.routes)) {
    service.routes.forEach((route, i) => {
      if (!isPlainMap(route)) return;
      const where: ManifestPath = [...at, 'routes', i];
      edgeRules(where, route, issuers, report);
      if (route.auth !== undefined || route.authorize !== undefined) check(where, [...layers, { at: where, map: route }]);
    });
  }
}

function durationOf(value: unknown): number | undefined {
  return typeof value === 'string' || typeof value === 'number' ? parseDuration(value) : undefined;
}

/** The listener a section asks for, its default when absent, undefined when it is malformed. */
function listenerOf(data: Record<string, unknown>, section: string, fallback: ListenSpec): ListenSpec | undefined {
  const value = data[section];
  if (value === undefined) return fallback;
  if (!isPlainMap(value)) return undefined;
  if (value.listen === undefined) return fallback;
  return typeof value.listen === 'string' || typeof value.listen === 'number' ? parseListen(value.listen) : undefined;
}
