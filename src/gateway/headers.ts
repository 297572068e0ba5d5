import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { HOP_BY_HOP } from './http1/response-parser.js';


/**
 * Headers the gateway sets itself; a client's copy is replaced, not forwarded.
 * `Forwarded` (RFC 7239) and `X-Real-IP` say the same as X-Forwarded-For in
 * other words, and an instance that reads them must not get a client's
 * invention: they are dropped (the trusted chain is in X-Forwarded-For).
 */
const OWN = new Set(['x-request-id', 'x-forwarded-prefix', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-for', 'forwarded', 'x-real-ip', 'expect', 'x-berth-timeout-ms']);

/**
 * The time an instance has left to answer, in whole milliseconds, set by the
 * gateway on every try (and by berth/client): a service that calls another
 * passes what is left on, so nested calls shrink the deadline instead of each
 * starting a fresh one. A request that arrives with it gets at most that long.
 */
export const TIMEOUT_HEADER = 'x-berth-timeout-ms';

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** The client's request id when it is sane (visible ASCII, at most 200 chars), else a new UUID. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

export interface ForwardedInfo {
  requestId: string;
  prefix: string;
  proto: 'http' | 'https';
  /** What the instance has left, for x-berth-timeout-ms. */
  timeoutMs: number;
  /** X-Forwarded-For as the instance gets it (a trusted proxy's list plus the peer, or just the peer). */
  forwardedFor: string;
  /** Signed identity headers (flat name, value list), or null. */
  identity: string[] | null;
}

/** The deadline a client asked for with x-berth-timeout-ms, in ms, or undefined (absent or not a positive integer). */
export function requestedTimeoutOf(req: IncomingMessage): number | undefined {
  const given = req.headers[TIMEOUT_HEADER];
  if (typeof given !== 'string') return undefined;
  const ms = Number(given);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

/**
 * The headers an instance receives: the client's, less hop-by-hop ones, those
 * named in its Connection header and every `x-berth-` header (identity
 * headers are Berth's to set: a client can never forge them), plus
 * X-Forwarded-*, the request id and, on authenticated routes, the signed
 * identity. Built from rawHeaders as a flat list: no header object is
 * materialised.
 */
export function upstreamHeaders(req: IncomingMessage, info: ForwardedInfo): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let connection: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower === 'connection') connection = connection ? `${connection},${raw[i + 1]}` : raw[i + 1];
    else if (lower === 'host') host = raw[i + 1];
    if (HOP_BY_HOP.has(lower) || OWN.has(lower) || lower.startsWith('x-berth-')) continue;
    out.push(name, raw[i + 1]!);
  }
  if (connection) stripConnectionTokens(out, connection);
  if (info.identity !== null) for (let i = 0; i < info.identity.length; i++) out.push(info.identity[i]!);
  out.push(
    'x-forwarded-for', info.forwardedFor,
    'x-forwarded-proto', info.proto,
    'x-forwarded-prefix', info.prefix,
    'x-request-id', info.requestId,
    TIMEOUT_HEADER, String(Math.max(1, Math.floor(info.timeoutMs))),
  );
  if (host !== undefined) out.push('x-forwarded-host', host);
  return out;
}

/** Removes from a flat header list every header the Connection header names (RFC 9110 §7.6.1). */
function stripConnectionTokens(flat: string[], connection: string): void {
  const named = new Set(connection.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== 'close' && t !== 'keep-alive'));
  if (named.size === 0) return;
  for (let i = flat.length - 2; i >= 0; i -= 2) {
    if (named.has(flat[i]!.toLowerCase())) flat.splice(i, 2);
  }
}

/**
 * Response headers from an instance, as the client parsed them (a flat list,
 * lower-case names, hop-by-hop fields already dropped), with the gateway's
 * x-request-id over the instance's copy: a flat list for `writeHead`.
 */
export function downstreamHeaders(headers: readonly string[], requestId: string): string[] {
  const out = ['x-request-id', requestId];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name !== 'x-request-id') out.push(name, headers[i + 1]!);
  }
  return out;
}
