import { isIP } from 'node:net';
import type { ListenSpec } from './types.js';

const DEFAULT_HOST = '127.0.0.1';
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export const LISTEN_EXPECTED = 'a listen address "host:port", "[ipv6]:port" or a port number (0-65535)';

/** A DNS host name or an IP address (IPv6 without brackets). */
export function isHost(text: string): boolean {
  return isIP(text) !== 0 || HOSTNAME.test(text);
}

function toPort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

/**
 * `"127.0.0.1:8080"`, `"[::1]:8080"`, `"localhost:8080"`, `"8080"` or `8080`
 * (a bare port listens on 127.0.0.1). Port 0 asks the OS for a free port.
 */
export function parseListen(value: string | number): ListenSpec | undefined {
  if (typeof value === 'number') {
    return Number.isInteger(value) && value >= 0 && value <= 65535 ? { host: DEFAULT_HOST, port: value } : undefined;
  }
  const text = value.trim();
  const bare = toPort(text);
  if (bare !== undefined) return { host: DEFAULT_HOST, port: bare };
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (v6 !== null) {
    const port = toPort(v6[2] ?? '');
    const host = v6[1] ?? '';
    return port !== undefined && isIP(host) === 6 ? { host, port } : undefined;
  }
  const colon = text.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const host = text.slice(0, colon);
  const port = toPort(text.slice(colon + 1));
  if (port === undefined || host.includes(':') || !isHost(host)) return undefined;
  return { host, port };
}

const WILDCARD = new Set(['0.0.0.0', '::']);

/** Whether two listeners would fight over one socket (port 0 never does: each gets its own). */
export function listenersClash(a: ListenSpec, b: ListenSpec): boolean {
  if (a.port === 0 || b.port === 0 || a.port !== b.port) return false;
  return a.host.toLowerCase() === b.host.toLowerCase() || WILDCARD.has(a.host) || WILDCARD.has(b.host);
}

export function formatListen(spec: ListenSpec): string {
  return spec.host.includes(':') ? `[${spec.host}]:${spec.port}` : `${spec.host}:${spec.port}`;
}

/**
 * Whether a listener on `host` is reachable from this machine only: the
 * loopback addresses (127.0.0.0/8, ::1) and `localhost`. A wildcard
 * (`0.0.0.0`, `::`) or any other name or address is not.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  // IPv4-mapped loopback, as some tools spell it.
  return /^::ffff:127\./.test(h);
}
