// An HTTP/1.1 response parser for the gateway's connections to instances
// (RFC 9112): status line, header fields, and the body framed by
// Content-Length, chunked coding or the connection's close. Strict where a
// lenient reading would let a response be taken for another (smuggling):
// obs-fold, bare CR or LF, NUL, a header name that is not a token, conflicting
// Content-Length values, Transfer-Encoding with Content-Length, a coding
// other than chunked, malformed chunk sizes and bytes after the response all
// fail it, and the connection is then closed, never reused.

/** The response does not parse: the connection it came on cannot be trusted with another. */
export class ResponseParseError extends Error {
  override name = 'ResponseParseError';
  readonly code = 'BERTH_UPSTREAM_PROTOCOL';
}

/** What a parser hands on. Calls come in order: head, data*, end; or an error thrown from `feed`/`eof`. */
export interface ResponseSink {
  /**
   * A final (non-1xx) response's head. `headers` is a flat [name, value, …]
   * list, names in lower case, without hop-by-hop fields (RFC 9110 §7.6.1)
   * and without those the Connection field names: ready to forward.
   */
  onHead(status: number, headers: string[]): void;
  onData(chunk: Buffer): void;
  /** The response is complete. */
  onEnd(): void;
}

/** Longest head (status line and fields) accepted: larger ones fail the response. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** Longest chunk-size line (with its extensions) and trailer section. */
const MAX_CHUNK_LINE = 256;
const MAX_TRAILER_BYTES = 16 * 1024;

const CRLF_CRLF = Buffer.from('\r\n\r\n');
/** A NUL, or a CR or LF that is not part of a CRLF: never in a valid head (or trailer section). */
const BAD_BREAK = /\0|\r(?!\n)|(?<!\r)\n/;
/** A chunk size and its extensions, if any (no NUL, CR or LF in them). */
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;[^\0\r\n]*)?$/;
const KEEP_ALIVE_TIMEOUT = /(?:^|[,;\s])timeout\s*=\s*(\d+)/i;

/** Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection and are never forwarded, either way. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);

// Parser states.
const HEAD = 0;
const BODY_LENGTH = 1;
const BODY_CLOSE = 2;
const CHUNK_SIZE_LINE = 3;
const CHUNK_DATA = 4;
const CHUNK_DATA_END = 5;
const TRAILERS = 6;
const DONE = 7;
const IDLE = 8;

export class ResponseParser {
  readonly #sink: ResponseSink;
  #state = IDLE;
  /** Bytes kept between feeds: an incomplete head, chunk-size line, CRLF or trailer section. */
  #pending: Buffer | null = null;
  /** Body bytes left: of the Content-Length, or of the current chunk. */
  #left = 0;
  #noBody = false;
  /** Whether the connection can carry another request once this response is done. */
  keepAlive = false;
  /** The `Keep-Alive: timeout=N` the instance announced, in ms, or null. */
  keepAliveHintMs: number | null = null;

  constructor(sink: ResponseSink) {
    this.#sink = sink;
  }

  /** Whether a response is being read (a request was sent and its response has not ended). */
  get busy(): boolean {
    return this.#state !== IDLE && this.#state !== DONE;
  }

  /** Expects the response to a request just sent with `method` (HEAD responses have no body). */
  expect(method: string): void {
    this.#state = HEAD;
    this.#pending = null;
    this.#noBody = method === 'HEAD';
    this.keepAlive = false;
  }

  /** Reads the next bytes from the connection. Throws ResponseParseError. */
  feed(buf: Buffer): void {
    let pos = 0;
    while (pos < buf.length) {
      switch (this.#state) {
        case HEAD:
          pos = this.#readHead(buf, pos);
          break;
        case BODY_LENGTH:
          pos = this.#readCounted(buf, pos, DONE);
          break;
        case BODY_CLOSE:
          this.#sink.onData(pos === 0 ? buf : buf.subarray(pos));
          pos = buf.length;
          break;
        case CHUNK_SIZE_LINE:
          pos = this.#readChunkSize(buf, pos);
          break;
        case CHUNK_DATA:
          pos = this.#readCounted(buf, pos, CHUNK_DATA_END);
          break;
        case CHUNK_DATA_END:
          pos = this.#readChunkEnd(buf, pos);
          break;
        case TRAILERS:
          pos = this.#readTrailers(buf, pos);
          break;
        default:
          throw new ResponseParseError('the instance sent bytes that answer no request');
      }
    }
  }

  /** The instance closed the connection: ends a response delimited by the close, fails one cut short. */
  eof(): void {
    if (this.#state === BODY_CLOSE) {
      this.#state = DONE;
      this.keepAlive = false;
      this.#sink.onEnd();
      return;
    }
    if (this.busy) throw new ResponseParseError(this.#state === HEAD && this.#pending === null ? 'the instance closed the connection before answering' : 'the instance closed the connection in the middle of its response');
  }

  /** Whether the instance closed before sending a byte of the response (for the caller's error code). */
  get untouched(): boolean {
    return this.#state === HEAD && this.#pending === null;
  }

  /** Hands on up to #left body bytes (of the Content-Length or the chunk) from `pos`; at 0 moves to `then`, and DONE ends the response. */
  #readCounted(buf: Buffer, pos: number, then: number): number {
    const n = Math.min(this.#left, buf.length - pos);
    this.#left -= n;
    const chunk = pos === 0 && n === buf.length ? buf : buf.subarray(pos, pos + n);
    const last = this.#left === 0;
    if (last) this.#state = then;
    this.#sink.onData(chunk);
    if (last && then === DONE) this.#sink.onEnd();
    return pos + n;
  }

  #take(buf: Buffer, pos: number): Buffer {
    const rest = pos === 0 ? buf : buf.subarray(pos);
    return this.#pending === null ? rest : Buffer.concat([this.#pending, rest]);
  }

  #readHead(buf: Buffer, pos: number): number {
    const from = this.#pending === null ? 0 : Math.max(0, this.#pending.length - 3);
    const data = this.#take(buf, pos);
    const end = data.indexOf(CRLF_CRLF, from);
    if (end < 0) {
      // (Up to 3 bytes of the terminating CRLFCRLF may be in already.)
      if (data.length > MAX_HEAD_BYTES + 3) throw new ResponseParseError(`the instance's response head is larger than ${MAX_HEAD_BYTES} bytes`);
      // Copied: the socket's buffer is not ours to keep.
      this.#pending = Buffer.from(data);
      return buf.length;
    }
    if (end > MAX_HEAD_BYTES) throw new ResponseParseError(`the instance's response head is larger than ${MAX_HEAD_BYTES} bytes`);
    const consumed = end + 4 - (this.#pending === null ? 0 : this.#pending.length);
    this.#pending = null;
    this.#parseHead(data.toString('latin1', 0, end));
    return pos + consumed;
  }

  #parseHead(text: string): void {
    // HTTP/1.x SP 3DIGIT [SP reason]
    const lineEnd = text.indexOf('\r\n');
    const statusEnd = lineEnd < 0 ? text.length : lineEnd;
    if (!validStatusLine(text, statusEnd)) throw new ResponseParseError(`the instance sent an invalid status line: ${JSON.stringify(text.slice(0, Math.min(statusEnd, 40)))}`);
    const status = (text.charCodeAt(9) - 48) * 100 + (text.charCodeAt(10) - 48) * 10 + (text.charCodeAt(11) - 48);
    const http10 = text.charCodeAt(7) === 0x30;
    // A NUL anywhere, or a CR or LF that is not a line's CRLF (checked line by line below).
    if (text.indexOf('\0') >= 0 || text.indexOf('\r') !== lineEnd || text.indexOf('\n') !== (lineEnd < 0 ? -1 : lineEnd + 1)) throw badBreak();

    const headers: string[] = [];
    let contentLength = -1;
    let transferEncoding: string | undefined;
    let connection: string | undefined;
    let keepAliveHint: string | undefined;
    let pos = lineEnd < 0 ? text.length : lineEnd + 2;
    while (pos < text.length) {
      let next = text.indexOf('\r\n', pos);
      if (next < 0) next = text.length;
      // Each line's only CR and LF are its CRLF.
      const cr = text.indexOf('\r', pos);
      const lf = text.indexOf('\n', pos);
      if (cr !== (next === text.length ? -1 : next) || lf !== (next === text.length ? -1 : next + 1)) throw badBreak();
      const first = text.charCodeAt(pos);
      if (first === 0x20 || first === 0x09) throw new ResponseParseError('the instance sent a folded header line (obs-fold)');
      const colon = text.indexOf(':', pos);
      if (colon < 0 || colon > next) throw new ResponseParseError(`the instance sent a header line without a colon: ${JSON.stringify(text.slice(pos, Math.min(next, pos + 40)))}`);
      if (!isToken(text, pos, colon)) throw new ResponseParseError(`the instance sent an invalid header name: ${JSON.stringify(text.slice(pos, Math.min(colon, pos + 40)))}`);
      const lower = text.slice(pos, colon).toLowerCase();
      const value = trimOws(text.slice(colon + 1, next));
      pos = next + 2;
      if (HOP_BY_HOP.has(lower)) {
        if (lower === 'connection') connection = connection === undefined ? value : `${connection},${value}`;
        else if (lower === 'transfer-encoding') transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`;
        else if (lower === 'keep-alive') keepAliveHint = value;
        continue;
      }
      if (lower === 'content-length') {
        const length = parseLength(value);
        if (length < 0 || (contentLength >= 0 && length !== contentLength)) throw new ResponseParseError(`the instance sent an invalid or conflicting Content-Length: ${JSON.stringify(value.slice(0, 40))}`);
        if (contentLength >= 0) continue; // the same value again: forwarded once
        contentLength = length;
      }
      headers.push(lower, value);
    }

    if (status < 200) {
      if (status === 101) throw new ResponseParseError('the instance switched protocols on a request that did not ask for it');
      // 1xx informational (100 Continue, 103 Early Hints): skipped, the final response follows.
      return;
    }
    // Most instances say just `keep-alive` or `close`: no list to split.
    const plain = connection === undefined ? undefined : connection.toLowerCase();
    const tokens = plain === undefined || plain === 'keep-alive' || plain === 'close' ? null : plain.split(',').map(trimOws);
    if (tokens !== null) dropNamed(headers, tokens);
    const says = (token: string): boolean => (tokens === null ? plain === token : tokens.includes(token));
    this.keepAlive = http10 ? says('keep-alive') : !says('close');
    // Transfer-Encoding in HTTP/1.0 is faulty framing: the connection closes after it (RFC 9112 §6.1).
    if (http10 && transferEncoding !== undefined) this.keepAlive = false;
    const hint = keepAliveHint === undefined ? null : KEEP_ALIVE_TIMEOUT.exec(keepAliveHint);
    this.keepAliveHintMs = hint ? Number(hint[1]) * 1000 : null;

    const noBody = this.#noBody || status === 204 || status === 304;
    if (transferEncoding !== undefined && !noBody) {
      if (contentLength >= 0) throw new ResponseParseError('the instance sent both Transfer-Encoding and Content-Length');
      if (transferEncoding.trim().toLowerCase() !== 'chunked') throw new ResponseParseError(`the instance sent a transfer coding other than chunked: ${JSON.stringify(transferEncoding.slice(0, 40))}`);
      this.#state = CHUNK_SIZE_LINE;
    } else if (noBody || contentLength === 0) {
      this.#state = DONE;
    } else if (contentLength > 0) {
      this.#state = BODY_LENGTH;
      this.#left = contentLength;
    } else {
      // Neither: the body runs to the connection's close (RFC 9112 §6.3, point 8).
      this.#state = BODY_CLOSE;
      this.keepAlive = false;
    }
    this.#sink.onHead(status, headers);
    if (this.#state === DONE) this.#sink.onEnd();
  }

  #readChunkSize(buf: Buffer, pos: number): number {
    const data = this.#take(buf, pos);
    const end = data.indexOf('\r\n');
    if (end < 0) {
      if (data.length > MAX_CHUNK_LINE + 1) throw new ResponseParseError('the instance sent a chunk-size line that is too long');
      this.#pending = Buffer.from(data);
      return buf.length;
    }
    if (end > MAX_CHUNK_LINE) throw new ResponseParseError('the instance sent a chunk-size line that is too long');
    const line = data.toString('latin1', 0, end);
    const match = CHUNK_SIZE.exec(line);
    if (!match) throw new ResponseParseError(`the instance sent an invalid chunk size: ${JSON.stringify(line.slice(0, 40))}`);
    const consumed = end + 2 - (this.#pending === null ? 0 : this.#pending.length);
    this.#pending = null;
    this.#left = parseInt(match[1]!, 16);
    this.#state = this.#left === 0 ? TRAILERS : CHUNK_DATA;
    return pos + consumed;
  }

  #readChunkEnd(buf: Buffer, pos: number): number {
    const data = this.#take(buf, pos);
    if (data.length < 2) {
      this.#pending = Buffer.from(data);
      return buf.length;
    }
    if (data[0] !== 0x0d || data[1] !== 0x0a) throw new ResponseParseError('the instance sent a chunk longer than its size');
    const consumed = 2 - (this.#pending === null ? 0 : this.#pending.length);
    this.#pending = null;
    this.#state = CHUNK_SIZE_LINE;
    return pos + consumed;
  }

  /** The trailer section after the last chunk: read and dropped (fields the instance sends after its body are not forwarded). */
  #readTrailers(buf: Buffer, pos: number): number {
    const data = this.#take(buf, pos);
    // No trailer fields: the section is just CRLF.
    const end = data.length >= 2 && data[0] === 0x0d && data[1] === 0x0a ? 0 : data.indexOf(CRLF_CRLF);
    if (end < 0) {
      if (data.length > MAX_TRAILER_BYTES + 3) throw new ResponseParseError('the instance sent a trailer section that is too large');
      this.#pending = Buffer.from(data);
      return buf.length;
    }
    if (end > MAX_TRAILER_BYTES) throw new ResponseParseError('the instance sent a trailer section that is too large');
    const size = end === 0 ? 2 : end + 4;
    if (end > 0 && BAD_BREAK.test(data.toString('latin1', 0, end))) throw new ResponseParseError('the instance sent a bare CR, LF or NUL in its trailers');
    const consumed = size - (this.#pending === null ? 0 : this.#pending.length);
    this.#pending = null;
    this.#state = DONE;
    this.#sink.onEnd();
    return pos + consumed;
  }
}

/** `HTTP/1.0` or `HTTP/1.1`, SP, a status from 100 to 999, then the end or SP and a reason. */
function validStatusLine(text: string, end: number): boolean {
  if (end < 12 || !text.startsWith('HTTP/1.')) return false;
  const minor = text.charCodeAt(7);
  if ((minor !== 0x30 && minor !== 0x31) || text.charCodeAt(8) !== 0x20) return false;
  const a = text.charCodeAt(9);
  const b = text.charCodeAt(10);
  const c = text.charCodeAt(11);
  if (a < 0x31 || a > 0x39 || b < 0x30 || b > 0x39 || c < 0x30 || c > 0x39) return false;
  return end === 12 || text.charCodeAt(12) === 0x20;
}

/** tchar (RFC 9110 §5.6.2), by code: 1 where allowed. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;

/** Whether text[from, to) is a token: at least one tchar, nothing else. */
function isToken(text: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c > 127 || TCHAR[c] === 0) return false;
  }
  return true;
}

function badBreak(): ResponseParseError {
  return new ResponseParseError('the instance sent a bare CR, LF or NUL in its response head');
}

/** Content-Length: digits only, at most 15 of them (so the number is exact); -1 when not. */
function parseLength(value: string): number {
  if (value.length === 0 || value.length > 15) return -1;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
  }
  return Number(value);
}

/** Strips optional whitespace (SP and HTAB only) around a field value. */
function trimOws(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && (value.charCodeAt(start) === 0x20 || value.charCodeAt(start) === 0x09)) start++;
  while (end > start && (value.charCodeAt(end - 1) === 0x20 || value.charCodeAt(end - 1) === 0x09)) end--;
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

/** Removes the fields a Connection header names (other than close and keep-alive, which name no field). */
function dropNamed(headers: string[], tokens: string[]): void {
  const named = tokens.filter((t) => t !== '' && t !== 'close' && t !== 'keep-alive');
  if (named.length === 0) return;
  for (let i = headers.length - 2; i >= 0; i -= 2) if (named.includes(headers[i]!)) headers.splice(i, 2);
}
