/**
 * Request hygiene at the edge, before routing: the request target is brought
 * to one canonical path so that no spelling of it (dot segments, encoded dots,
 * double slashes) routes around a group's policies or reaches an instance
 * with `..` in it; spellings with no safe canonical form (encoded slashes,
 * backslashes, NUL, bad escapes) are refused. And message framing that two
 * parsers could read differently (request smuggling) is refused: Node's parser
 * already refuses most of it (Content-Length with Transfer-Encoding, duplicate
 * or signed Content-Length, obs-fold, bad chunk sizes, bad header names); the
 * rest is here.
 */
import type { IncomingMessage } from 'node:http';

/** Header lines a request may have, unless the manifest says otherwise (`gateway.maxHeaders`). */
export const MAX_HEADERS = 100;

export type TargetCheck = { ok: true; url: string } | { ok: false; reason: string };

/** Characters a path may hold as they are (RFC 3986 pchar and "/"), with no "%" to decode and no "\". */
const PLAIN_PATH = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
/** A path with nothing to normalize: plain characters, no "//", no "." or ".." segment. */
const needsWork = (path: string): boolean => !PLAIN_PATH.test(path) || path.includes('//') || /\/\.\.?(?:\/|$)/.test(path);

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * The canonical form of a request target (origin-form: path and query), or
 * why it is refused. The query is left as sent: it is the instance's to read.
 */
export function normalizeTarget(url: string): TargetCheck {
  if (url.length === 0 || url[0] !== '/') {
    return { ok: false, reason: url === '*' ? 'the asterisk form ("*") is not served' : 'the request target must be a path (origin form), not an absolute URL' };
  }
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (!needsWork(path)) return { ok: true, url };
  const query = q === -1 ? '' : url.slice(q);

  // 1. Percent-decoding: unreserved characters are decoded (so %2e%2e is "..");
  //    others stay encoded, with upper-case hex; those that would change the
  //    path's structure or meaning once decoded are refused.
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i]!;
    if (c === '%') {
      const hex = path.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { ok: false, reason: `bad percent-encoding "${path.slice(i, i + 3)}" in the path` };
      const code = Number.parseInt(hex, 16);
      if (code === 0x2f || code === 0x5c) return { ok: false, reason: 'an encoded slash or backslash in the path' };
      if (code === 0 || code < 0x20 || code === 0x7f) return { ok: false, reason: 'an encoded control character in the path' };
      const ch = String.fromCharCode(code);
      decoded += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
      i += 2;
    } else if (c === '\\') {
      return { ok: false, reason: 'a backslash in the path' };
    } else if (c.charCodeAt(0) < 0x21 || c.charCodeAt(0) > 0x7e) {
      return { ok: false, reason: 'a control, space or non-ASCII character in the path' };
    } else {
      decoded += c;
    }
  }

  // 2. Empty segments merged ("//" → "/"), 3. dot segments removed (RFC 3986 §5.2.4).
  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i]!;
    const last = i === segments.length - 1;
    if (seg === '.' || (seg === '' && !last)) {
      if (last) out.push('');
      continue;
    }
    if (seg === '..') {
      if (out.length === 0) return { ok: false, reason: 'the path climbs above its root with ".."' };
      out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(seg);
  }
  return { ok: true, url: `/${out.join('/')}${query}` };
}

/**
 * Framing that Node's parser lets through but that a proxy must not forward
 * as is: null when the request is well framed, else why not and the status.
 */
export function framingProblem(req: IncomingMessage, maxHeaders = MAX_HEADERS): { status: 400 | 431 | 501; reason: string } | null {
  const raw = req.rawHeaders;
  // Node truncates past 2,000 headers without a word; a request with more than a hundred is refused (Envoy's default).
  if (raw.length > 2 * maxHeaders) return { status: 431, reason: `more than ${maxHeaders} headers` };
  let hosts = 0;
  let authorizations = 0;
  let transferEncoding: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') hosts++;
    else if (name.length === 13 && name.toLowerCase() === 'authorization') authorizations++;
    else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') transferEncoding = transferEncoding === undefined ? raw[i + 1]! : `${transferEncoding},${raw[i + 1]!}`;
  }
  // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request.
  if (hosts > 1) return { status: 400, reason: 'more than one Host header' };
  // RFC 9110 §11.6.2: one Authorization. Node keeps the first and drops the others, but the instance gets them all:
  // the gateway would admit one set of credentials and the instance could read another.
  if (authorizations > 1) return { status: 400, reason: 'more than one Authorization header' };
  if (transferEncoding !== undefined) {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return { status: 400, reason: 'Transfer-Encoding in an HTTP/1.0 request' };
    // Only chunked is understood; anything layered on it would reach the instance undecoded.
    if (transferEncoding.trim().toLowerCase() !== 'chunked') return { status: 501, reason: `transfer coding "${transferEncoding}" is not supported (only chunked)` };
  }
  return null;
}
