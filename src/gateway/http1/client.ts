// The gateway's HTTP/1.1 client to instances: a pool of keep-alive
// connections per instance, requests written as one string, responses read by
// ResponseParser and handed on as they arrive (head, body chunks, end), with
// backpressure both ways and no buffering.
//
// Why not undici, which the rest of Berth uses: measured in bench/gateway, a
// bare node:http proxy spends 69.7 µs of CPU per request with undici's
// Agent.dispatch behind it and 49.6 µs with this shape of client (req/s 0.75 ×
// and 1.01 × nginx's, same run). That difference is most of what kept the
// gateway under its throughput target (docs/performance.md). What it leaves
// out, because the gateway never needs it: pipelining, HTTP/2, redirects,
// retries (the gateway's policies decide those), proxies, and request bodies
// other than a stream.

import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { connect as connectTls, createSecureContext, type SecureContext } from 'node:tls';
import type { Readable } from 'node:stream';
import { ResponseParseError, ResponseParser, type ResponseSink } from './response-parser.js';

/** What a request's handler can do while its response streams. */
export interface UpstreamController {
  /** Ends the request with `err` (onResponseError follows, once): its connection is closed. */
  abort(err: Error): void;
  /** Stops reading the response until resume(): the instance is held back by TCP. */
  pause(): void;
  resume(): void;
}

/** Told how a request goes. After onResponseEnd or onResponseError nothing more is called. */
export interface UpstreamHandler {
  /** Before anything is sent: the controller, to abort with. */
  onRequestStart(controller: UpstreamController): void;
  /** The final response's status and fields ([name, value, …], lower-case names, no hop-by-hop fields). 1xx responses are skipped. */
  onResponseStart(controller: UpstreamController, status: number, headers: string[]): void;
  onResponseData(controller: UpstreamController, chunk: Buffer): void;
  onResponseEnd(controller: UpstreamController): void;
  onResponseError(controller: UpstreamController, err: Error): void;
}

export interface UpstreamRequest {
  /** `http://host:port` or `https://host:port`. */
  origin: string;
  /** The request target, origin-form: starts with `/`. */
  path: string;
  method: string;
  /** Flat [name, value, …]; a `host` field is added when there is none. */
  headers: readonly string[];
  /** Sent with its Content-Length when the headers have one, else chunked. */
  body: Readable | null;
}

export interface UpstreamTlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
  rejectUnauthorized: boolean;
}

export interface UpstreamClientOptions {
  /** Connections per origin; requests past it wait in line. */
  connections: number;
  /** How long an idle connection is kept, at most: less when the instance announces a shorter `Keep-Alive: timeout`. */
  keepAliveTimeoutMs: number;
  /** The longest keep-alive an instance's `Keep-Alive: timeout` can ask for. */
  keepAliveMaxTimeoutMs: number;
  /** Connecting (and the TLS handshake) past this fails with code `BERTH_UPSTREAM_CONNECT_TIMEOUT`. */
  connectTimeoutMs: number;
  /** For https:// origins. */
  tls?: UpstreamTlsOptions;
  /** For tests: the clock of keep-alive expiry, in ms. */
  now?: () => number;
}

/** A connection whose keep-alive ends within this margin of the instance's own timeout is not reused (it may be closing). */
const KEEP_ALIVE_MARGIN_MS = 1_000;
/** How often idle connections past their keep-alive are closed (they are also checked when picked). */
const SWEEP_MS = 1_000;
const INVALID_TARGET = /[\0-\x20\x7f]/;
const CONTENT_LENGTH = /^content-length$/i;
const HOST = /^host$/i;

export class UpstreamClient {
  readonly #options: UpstreamClientOptions;
  readonly #pools = new Map<string, OriginPool>();
  readonly #secureContext: SecureContext | undefined;
  readonly #now: () => number;
  #sweeper: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: UpstreamClientOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    // One context for every connection: built per connection, it would parse the CA and key each time.
    const tls = options.tls;
    this.#secureContext = tls ? createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key }) : undefined;
  }

  /** Sends a request; `handler` hears how it goes (errors included: this never throws). */
  dispatch(request: UpstreamRequest, handler: UpstreamHandler): void {
    const call = new Call(request, handler);
    if (this.#closing) {
      call.fail(new UpstreamClosed());
      return;
    }
    if (!request.path.startsWith('/') || INVALID_TARGET.test(request.path)) {
      call.fail(new TypeError(`not a request target: ${JSON.stringify(request.path.slice(0, 60))}`));
      return;
    }
    let pool = this.#pools.get(request.origin);
    if (!pool) {
      let url: URL;
      try {
        url = new URL(request.origin);
      } catch {
        call.fail(new TypeError(`not an origin: ${request.origin}`));
        return;
      }
      pool = new OriginPool(this, request.origin, url, this.#options, this.#secureContext, this.#now);
      this.#pools.set(request.origin, pool);
      this.#sweeper ??= setInterval(() => this.#sweep(), SWEEP_MS).unref();
    }
    pool.dispatch(call);
  }

  /** Connections open and requests waiting, per origin (for tests and diagnostics). */
  stats(): Map<string, { connections: number; idle: number; queued: number }> {
    return new Map([...this.#pools].map(([origin, p]) => [origin, p.stats()]));
  }

  /** Refuses new requests, lets those in flight finish, then closes every connection. */
  close(): Promise<void> {
    this.#closing ??= Promise.all([...this.#pools.values()].map((p) => p.close())).then(() => {
      clearInterval(this.#sweeper);
      this.#pools.clear();
    });
    return this.#closing;
  }

  /** Ends everything now: requests in flight fail. */
  destroy(): void {
    this.#closing ??= Promise.resolve();
    clearInterval(this.#sweeper);
    for (const pool of this.#pools.values()) pool.destroy(new UpstreamClosed());
    this.#pools.clear();
  }

  /** An origin with no connection left and nothing waiting is forgotten (instances come and go with their ports). */
  forget(pool: OriginPool): void {
    if (this.#pools.get(pool.key) === pool) this.#pools.delete(pool.key);
    if (this.#pools.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #sweep(): void {
    const now = this.#now();
    for (const pool of this.#pools.values()) pool.sweep(now);
  }
}

/** One request, from dispatch to its end: the handler's controller. */
class Call implements UpstreamController {
  readonly request: UpstreamRequest;
  readonly handler: UpstreamHandler;
  connection: Connection | null = null;
  pool: OriginPool | null = null;
  done = false;
  paused = false;

  constructor(request: UpstreamRequest, handler: UpstreamHandler) {
    this.request = request;
    this.handler = handler;
  }

  abort(err: Error): void {
    if (this.done) return;
    if (this.connection) this.connection.fail(err);
    else {
      this.pool?.unqueue(this);
      this.fail(err);
    }
  }

  pause(): void {
    if (this.done || this.paused) return;
    this.paused = true;
    this.connection?.socket.pause();
  }

  resume(): void {
    if (this.done || !this.paused) return;
    this.paused = false;
    this.connection?.socket.resume();
  }

  /** Ends the call with an error, telling the handler once. */
  fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.handler.onResponseError(this, err);
  }
}

/** The connections to one instance, and the requests waiting for one. */
class OriginPool {
  /** The origin as requests name it (the client's map key). */
  readonly key: string;
  readonly #client: UpstreamClient;
  readonly #host: string;
  readonly #port: number;
  readonly #hostHeader: string;
  readonly #options: UpstreamClientOptions;
  readonly #secure: SecureContext | undefined;
  readonly #now: () => number;
  readonly #all = new Set<Connection>();
  /** Idle connections, the most recently used last (taken first: the others age out). */
  readonly #idle: Connection[] = [];
  readonly #queue: Call[] = [];
  #closing: (() => void) | undefined;

  constructor(client: UpstreamClient, key: string, url: URL, options: UpstreamClientOptions, secureContext: SecureContext | undefined, now: () => number) {
    this.key = key;
    this.#client = client;
    this.#host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    this.#port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    this.#hostHeader = url.host;
    this.#options = options;
    this.#secure = url.protocol === 'https:' ? (secureContext ?? createSecureContext()) : undefined;
    this.#now = now;
  }

  get hostHeader(): string {
    return this.#hostHeader;
  }

  dispatch(call: Call): void {
    call.pool = this;
    const now = this.#now();
    for (let c = this.#idle.pop(); c !== undefined; c = this.#idle.pop()) {
      if (c.expiresAt > now && !c.socket.destroyed) {
        c.start(call);
        return;
      }
      c.close();
    }
    if (this.#all.size < this.#options.connections) {
      this.#open().start(call);
      return;
    }
    this.#queue.push(call);
    try {
      call.handler.onRequestStart(call);
    } catch (err) {
      this.unqueue(call);
      call.fail(err as Error);
    }
  }

  unqueue(call: Call): void {
    const i = this.#queue.indexOf(call);
    if (i >= 0) this.#queue.splice(i, 1);
  }

  /** A connection finished its response and can carry another. */
  release(connection: Connection): void {
    // Closed meanwhile (by the instance, or an abort): its close event takes it out of the pool.
    if (connection.socket.destroyed) return;
    const next = this.#queue.shift();
    if (next !== undefined) {
      connection.start(next, false);
      return;
    }
    if (this.#closing) {
      connection.close();
      return;
    }
    this.#idle.push(connection);
  }

  /** A connection closed (for whatever reason): one waiting request can have a new one. */
  removed(connection: Connection): void {
    this.#all.delete(connection);
    const i = this.#idle.indexOf(connection);
    if (i >= 0) this.#idle.splice(i, 1);
    // A request waiting in line was dispatched before any close(): it is served, closing or not.
    const next = this.#queue.shift();
    if (next !== undefined) this.#open().start(next, false);
    else if (this.#all.size === 0) {
      this.#client.forget(this);
      this.#closing?.();
    }
  }

  sweep(now: number): void {
    for (let i = this.#idle.length - 1; i >= 0; i--) if (this.#idle[i]!.expiresAt <= now) this.#idle[i]!.close();
  }

  stats(): { connections: number; idle: number; queued: number } {
    return { connections: this.#all.size, idle: this.#idle.length, queued: this.#queue.length };
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#closing = resolve;
      for (const c of [...this.#idle]) c.close();
      if (this.#all.size === 0) resolve();
    });
  }

  destroy(err: Error): void {
    this.#closing ??= () => undefined;
    for (const call of this.#queue.splice(0)) call.fail(err);
    for (const c of [...this.#all]) c.fail(err);
  }

  keepAliveMs(hintMs: number | null): number {
    const { keepAliveTimeoutMs, keepAliveMaxTimeoutMs } = this.#options;
    if (hintMs === null) return keepAliveTimeoutMs;
    return Math.max(0, Math.min(hintMs - KEEP_ALIVE_MARGIN_MS, keepAliveMaxTimeoutMs));
  }

  now(): number {
    return this.#now();
  }

  #open(): Connection {
    const options = { host: this.#host, port: this.#port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 };
    const socket = this.#secure
      ? connectTls({ ...options, secureContext: this.#secure, servername: this.#options.tls?.servername ?? (isIP(this.#host) !== 0 ? undefined : this.#host), rejectUnauthorized: this.#options.tls?.rejectUnauthorized ?? true, ALPNProtocols: ['http/1.1'] })
      : connectTcp(options);
    const connection = new Connection(this, socket, this.#secure !== undefined, this.#options.connectTimeoutMs);
    this.#all.add(connection);
    return connection;
  }
}

/** One connection to an instance, carrying one request at a time. */
class Connection implements ResponseSink {
  readonly socket: Socket;
  readonly #pool: OriginPool;
  readonly #parser: ResponseParser;
  #call: Call | null = null;
  #connectTimer: NodeJS.Timeout | undefined;
  /** The request's body has been written to its end (or there was none). */
  #sent = true;
  #body: BodyWriter | null = null;
  /** The response ended during the current read: the connection is released once the read is done. */
  #ended = false;
  /** Idle since it was released: it is not reused at or after this time. */
  expiresAt = Infinity;

  constructor(pool: OriginPool, socket: Socket, secure: boolean, connectTimeoutMs: number) {
    this.#pool = pool;
    this.socket = socket;
    this.#parser = new ResponseParser(this);
    this.#connectTimer = setTimeout(() => this.fail(connectError('BERTH_UPSTREAM_CONNECT_TIMEOUT', `connecting to the instance took more than ${connectTimeoutMs} ms`)), connectTimeoutMs);
    socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(this.#connectTimer));
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
  }

  /** Sends `call`'s request on this connection. `fresh`: the call was not queued, so onRequestStart is still due. */
  start(call: Call, fresh = true): void {
    if (fresh) {
      try {
        call.handler.onRequestStart(call);
      } catch (err) {
        call.fail(err as Error);
      }
    }
    if (call.done) {
      // Aborted from onRequestStart (before it had this connection): the connection carried nothing, it can go back.
      this.expiresAt = this.#pool.now() + this.#pool.keepAliveMs(null);
      this.#pool.release(this);
      return;
    }
    this.#call = call;
    this.#ended = false;
    this.expiresAt = Infinity;
    call.connection = this;
    // Paused while it waited in line.
    if (call.paused) this.socket.pause();
    const { method, path, headers, body } = call.request;
    this.#parser.expect(method);
    let head = `${method} ${path} HTTP/1.1\r\n`;
    let hasHost = false;
    let hasLength = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      if (name.length === 4 && HOST.test(name)) hasHost = true;
      else if (name.length === 14 && CONTENT_LENGTH.test(name)) hasLength = true;
      head += `${name}: ${headers[i + 1]}\r\n`;
    }
    if (!hasHost) head += `host: ${this.#pool.hostHeader}\r\n`;
    if (body === null) {
      this.#sent = true;
      this.socket.write(`${head}\r\n`, 'latin1');
      return;
    }
    this.#sent = false;
    if (hasLength) this.socket.write(`${head}\r\n`, 'latin1');
    // Without a length the head waits for the body's first bytes: a body that
    // fails at once (over maxBody in its first read) then never reaches the instance.
    this.#body = new BodyWriter(body, this.socket, hasLength ? null : `${head}transfer-encoding: chunked\r\n\r\n`, {
      sent: () => {
        this.#body = null;
        this.#sent = true;
      },
      failed: (err) => this.fail(err),
    });
  }

  // ResponseSink: the parser's calls, handed to the current call's handler.
  onHead(status: number, headers: string[]): void {
    const call = this.#call;
    if (call === null || call.done) return;
    try {
      call.handler.onResponseStart(call, status, headers);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  onData(chunk: Buffer): void {
    const call = this.#call;
    if (call === null || call.done) return;
    try {
      call.handler.onResponseData(call, chunk);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  onEnd(): void {
    const call = this.#call;
    this.#ended = true;
    if (call === null || call.done) return;
    call.done = true;
    call.handler.onResponseEnd(call);
  }

  readonly #onData = (buf: Buffer): void => {
    if (this.#call === null) {
      // Nothing was asked: an instance that talks out of turn cannot be trusted with the next request.
      this.close();
      return;
    }
    try {
      this.#parser.feed(buf);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    if (this.#ended) this.#finish();
  };

  /** The response is complete: the connection goes back to the pool, or is closed if it cannot be reused. */
  #finish(): void {
    const call = this.#call;
    this.#call = null;
    this.#ended = false;
    if (call?.paused) this.socket.resume();
    if (this.socket.destroyed) return;
    if (!this.#parser.keepAlive || !this.#sent) {
      this.close();
      return;
    }
    const keepAliveMs = this.#pool.keepAliveMs(this.#parser.keepAliveHintMs);
    if (keepAliveMs <= 0) {
      this.close();
      return;
    }
    this.expiresAt = this.#pool.now() + keepAliveMs;
    this.#pool.release(this);
  }

  readonly #onEnd = (): void => {
    // The instance closed its side: a response delimited by the close ends here; any other is cut.
    if (this.#call !== null) {
      const untouched = this.#parser.untouched;
      try {
        this.#parser.eof();
      } catch (err) {
        this.fail(untouched ? socketClosed() : (err as Error));
        return;
      }
      if (this.#ended) this.#finish();
    }
    this.close();
  };

  readonly #onError = (err: Error): void => {
    this.fail(err);
  };

  readonly #onClose = (): void => {
    clearTimeout(this.#connectTimer);
    this.#body?.detach();
    this.#body = null;
    if (this.#call !== null && !this.#call.done) this.#call.fail(socketClosed());
    this.#call = null;
    this.#pool.removed(this);
  };

  /** Fails the current request (if any) with `err` and closes the connection. */
  fail(err: Error): void {
    const call = this.#call;
    this.#call = null;
    this.#body?.detach();
    this.#body = null;
    this.socket.destroy();
    if (call !== null && !call.done) call.fail(err);
  }

  close(): void {
    if (this.socket.destroyed) return;
    this.#body?.detach();
    this.#body = null;
    this.socket.destroy();
  }
}

/**
 * Streams a request body onto a connection, paused while the socket's buffer
 * is full. A body without a length goes chunked, and its request head is held
 * until the body's first read is over (the chunks of one read, and an error
 * they cause, all come before the next setImmediate): a body that fails in
 * that read (BodyLimit) sends nothing at all.
 */
class BodyWriter {
  readonly #body: Readable;
  readonly #socket: Socket;
  readonly #chunked: boolean;
  readonly #done: { sent(): void; failed(err: Error): void };
  /** The request head, until it is written with the first chunks. */
  #head: string | null;
  #held: Buffer[] = [];
  #ended = false;
  #detached = false;
  #waiting = false;

  constructor(body: Readable, socket: Socket, chunkedHead: string | null, done: { sent(): void; failed(err: Error): void }) {
    this.#body = body;
    this.#socket = socket;
    this.#chunked = chunkedHead !== null;
    this.#head = chunkedHead;
    this.#done = done;
    body.on('data', this.#onData);
    body.on('end', this.#onEnd);
    body.on('error', this.#onError);
    body.on('close', this.#onClose);
    // Already read to its end (nothing more will come, not even 'end'): the request is complete as it is.
    if (body.readableEnded) this.#onEnd();
    else if (body.isPaused()) body.resume();
  }

  readonly #onData = (chunk: Buffer | string): void => {
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (data.length === 0) return;
    if (this.#head !== null) {
      // After the ticks of this read: a body stream's error is emitted on a tick of its own, after the chunk before it.
      if (this.#held.push(data) === 1) setImmediate(this.#flushHead);
      return;
    }
    this.#write([data]);
  };

  /** Writes the held head and chunks (and the end, if it came), unless the body failed meanwhile. */
  readonly #flushHead = (): void => {
    if ((this.#detached && !this.#ended) || this.#socket.destroyed) return;
    const socket = this.#socket;
    socket.cork();
    socket.write(this.#head ?? '', 'latin1');
    this.#head = null;
    const held = this.#held;
    this.#held = [];
    this.#write(held);
    if (this.#ended) socket.write('0\r\n\r\n', 'latin1');
    socket.uncork();
    if (this.#ended) this.#done.sent();
  };

  #write(chunks: Buffer[]): void {
    const socket = this.#socket;
    let ok = true;
    if (this.#chunked) {
      // Corked: each size line, its data and its CRLF leave in one writev.
      socket.cork();
      for (const data of chunks) {
        socket.write(`${data.length.toString(16)}\r\n`, 'latin1');
        socket.write(data);
        ok = socket.write('\r\n', 'latin1');
      }
      socket.uncork();
    } else for (const data of chunks) ok = socket.write(data);
    if (!ok && !this.#waiting && !this.#detached) {
      this.#waiting = true;
      this.#body.pause();
      socket.once('drain', this.#onDrain);
    }
  }

  readonly #onDrain = (): void => {
    this.#waiting = false;
    this.#body.resume();
  };

  readonly #onEnd = (): void => {
    this.detach();
    this.#ended = true;
    // Chunks still held: their flush is due and writes the end too.
    if (this.#held.length > 0) return;
    if (this.#head !== null) {
      this.#flushHead();
      return;
    }
    if (this.#chunked) this.#socket.write('0\r\n\r\n', 'latin1');
    this.#done.sent();
  };

  readonly #onError = (err: Error): void => {
    this.detach();
    this.#done.failed(err);
  };

  readonly #onClose = (): void => {
    // Closed before its end: the client went away mid-body.
    if (!this.#body.readableEnded) this.#onError(Object.assign(new Error('the request body was cut short'), { code: 'ECONNRESET' }));
  };

  detach(): void {
    this.#detached = true;
    this.#body.off('data', this.#onData);
    this.#body.off('end', this.#onEnd);
    this.#body.off('error', this.#onError);
    this.#body.off('close', this.#onClose);
    this.#socket.off('drain', this.#onDrain);
  }
}

/** The client is closing or closed: no new request is taken. */
export class UpstreamClosed extends Error {
  override name = 'UpstreamClosed';
  readonly code = 'BERTH_UPSTREAM_CLOSED';
  constructor() {
    super('the connection pool is closed');
  }
}

function connectError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function socketClosed(): Error {
  return Object.assign(new Error('the instance closed the connection'), { code: 'ECONNRESET' });
}

export { ResponseParseError };
