import semver from 'semver';
import type { ErrorCode } from '../errors.js';
import type { GroupRoute, RouteTable, ServiceRoute, VersionRoute } from './route-table.js';

export type RouteMatch =
  | {
      ok: true;
      group: GroupRoute;
      service: ServiceRoute;
      version: VersionRoute;
      /** The path prefix the gateway consumed (for X-Forwarded-Prefix). */
      prefix: string;
      /** What the instance receives: the rest of the path, with the query string. */
      path: string;
    }
  | { ok: false; code: ErrorCode; message: string; group?: string; service?: string; version?: string };

export interface RouteRequest {
  /** The request target as received: path and query. */
  url: string;
  /** Host header, possibly with a port. */
  host: string | undefined;
  /** The local port of the listener that took the request. */
  listenerPort: number;
  /** Whether that listener is the main gateway listener (path and host endpoints) or a group's own. */
  main: boolean;
  acceptVersion: string | undefined;
}

const VERSION_SEGMENT = /^\/v(\d+)(?=\/|$)/;

/**
 * Finds the route for a request: group by host, path prefix or listener port;
 * then `/<service>`; then the version from `/v<major>`, `Accept-Version`, or
 * the service's stable version. Pure: reads only the table it is given.
 */
export function matchRoute(table: RouteTable, req: RouteRequest): RouteMatch {
  const q = req.url.indexOf('?');
  const path = q === -1 ? req.url : req.url.slice(0, q);
  const query = q === -1 ? '' : req.url.slice(q);

  let group: GroupRoute | undefined;
  let prefix = '';
  if (req.main) {
    if (req.host !== undefined && table.hosts.size > 0) group = table.hosts.get(hostName(req.host));
    if (!group) {
      for (const entry of table.prefixes) {
        const p = entry.prefix;
        if (p === '/' || (path.startsWith(p) && (path.length === p.length || path.charCodeAt(p.length) === 47))) {
          group = entry.group;
          prefix = p === '/' ? '' : p;
          break;
        }
      }
    }
  } else {
    group = table.ports.get(req.listenerPort);
  }
  if (!group) return { ok: false, code: 'BERTH_ERR_NO_ROUTE', message: `no group serves ${path}` };

  // `/<service>` then the rest.
  const afterGroup = path.slice(prefix.length);
  const end = afterGroup.indexOf('/', 1);
  const serviceName = end === -1 ? afterGroup.slice(1) : afterGroup.slice(1, end);
  const service = serviceName ? group.services.get(serviceName) : undefined;
  if (!service) {
    return { ok: false, code: 'BERTH_ERR_NO_ROUTE', group: group.name, message: serviceName ? `group ${group.name} has no service "${serviceName}"` : `the path names no service of group ${group.name}` };
  }
  prefix = `${prefix}/${serviceName}`;
  let rest = end === -1 ? '' : afterGroup.slice(end);

  let version: VersionRoute | undefined;
  const major = VERSION_SEGMENT.exec(rest);
  if (major) {
    version = service.byMajor.get(Number(major[1]));
    if (!version) return { ok: false, code: 'BERTH_ERR_NO_ROUTE', group: group.name, service: service.service, message: `${service.service} has no version ${major[1]}.x` };
    prefix += major[0];
    rest = rest.slice(major[0].length);
  } else if (req.acceptVersion !== undefined && req.acceptVersion !== '') {
    const chosen = selectByRange(service, req.acceptVersion);
    if (!chosen.ok) return { ...chosen, group: group.name, service: service.service };
    version = chosen.version;
  } else {
    version = service.stable ? service.byVersion.get(service.stable) : service.versions.find((v) => v.instances > 0) ?? service.versions[0];
    if (!version) return { ok: false, code: 'BERTH_ERR_NO_INSTANCE', group: group.name, service: service.service, message: `${service.service} has no instance` };
  }
  return { ok: true, group, service, version, prefix, path: (rest === '' ? '/' : rest) + query };
}

/** Ranges seen in Accept-Version headers, parsed once each (bounded: clients send few distinct ones). */
const ranges = new Map<string, string | null>();
const MAX_RANGES = 256;

function selectByRange(service: ServiceRoute, header: string): { ok: true; version: VersionRoute } | { ok: false; code: ErrorCode; message: string } {
  let range = ranges.get(header);
  if (range === undefined) {
    range = semver.validRange(header);
    if (ranges.size >= MAX_RANGES) ranges.clear();
    ranges.set(header, range);
  }
  if (range === null) return { ok: false, code: 'BERTH_ERR_BAD_VERSION', message: `Accept-Version "${header}" is not a semver range` };
  let matched: VersionRoute | undefined;
  for (const v of service.versions) {
    if (!semver.satisfies(v.version, range)) continue;
    // Highest first: the first match with instances wins; remember a match without any for the error.
    if (v.instances > 0) return { ok: true, version: v };
    matched ??= v;
  }
  return matched
    ? { ok: true, version: matched }
    : { ok: false, code: 'BERTH_ERR_NO_ROUTE', message: `${service.service} has no version matching "${header}"` };
}

function hostName(host: string): string {
  // [::1]:8080 → [::1]; example.com:8080 → example.com
  const colon = host.lastIndexOf(':');
  const bare = colon > host.lastIndexOf(']') ? host.slice(0, colon) : host;
  return bare.toLowerCase();
}
