import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import type { ErrorCode } from '../errors.js';
import type { UpstreamFailure } from './observer.js';
import { downstreamHeaders } from './headers.js';

/** How a forwarded request ended, for the gateway to log, count and answer. */
export type ProxyOutcome =
  | { ok: true; status: number; bytesOut: number }
  | { ok: false; failure: UpstreamFailure | 'client'; code: ErrorCode; message: string; responded: boolean; bytesOut: number; status: number };

export interface ForwardOptions {
  dispatcher: Dispatcher;
  origin: string;
  path: string;
  headers: string[];
  body: IncomingMessage | null;
  /** From dispatch until the response's headers: past it, 504. */
  headersTimeoutMs: number;
  /** Silence while the response body streams: past it, the response is cut. */
  bodyIdleTimeoutMs: number;
}

/**
 * Streams one request to an instance and its response back, both ways without
 * buffering: the instance's body is paused while the client cannot keep up.
 * The client going away aborts the upstream request down to its socket.
 */
export function forward(req: IncomingMessage, res: ServerResponse, options: ForwardOptions, done: (outcome: ProxyOutcome) => void): void {
  const handler = new ProxyHandler(res, options.bodyIdleTimeoutMs, done);
  res.on('close', handler.onClientClose);
  handler.arm(options.headersTimeoutMs);
  options.dispatcher.dispatch(
    {
      origin: options.origin,
      path: options.path,
      method: req.method as Dispatcher.HttpMethod,
      headers: options.headers,
      body: options.body,
      // The timeouts are the handler's own (native timers): undici's would
      // replace a pooled timer object on every request, each kept until its
      // half-second sweep, long enough to be promoted to the old generation.
      // Measured under load: a major GC every 3.5 s instead of every 20 s+,
      // and with it most of the p99 tail (docs/performance.md).
      headersTimeout: 0,
      bodyTimeout: 0,
      // Bodies are streamed from the client: they cannot be replayed, so no automatic retry here.
      idempotent: false,
    },
    handler,
  );
}

class ProxyHandler implements Dispatcher.DispatchHandler {
  readonly #res: ServerResponse;
  readonly #bodyIdleTimeoutMs: number;
  readonly #done: (outcome: ProxyOutcome) => void;
  #controller: Dispatcher.DispatchController | undefined;
  /**
   * One timer per request: armed for the headers timeout; when it fires after
   * the response started, it re-arms itself until the body has been silent for
   * the idle timeout. (A second timer per request, or a refresh per chunk, costs
   * more than reading the clock per chunk.)
   */
  #timer: NodeJS.Timeout | undefined;
  /** performance.now() of the response's start or its latest body chunk. */
  #lastActivity = 0;
  #headersDeadline = 0;
  /** Why the request was cancelled before undici handed over its controller. */
  #cancelled: Error | undefined;
  #status = 0;
  #bytes = 0;
  #finished = false;
  #paused = false;
  #corked = false;

  constructor(res: ServerResponse, bodyIdleTimeoutMs: number, done: (outcome: ProxyOutcome) => void) {
    this.#res = res;
    this.#bodyIdleTimeoutMs = bodyIdleTimeoutMs;
    this.#done = done;
  }

  arm(timeoutMs: number): void {
    this.#timer = setTimeout(this.#onTimeout, Math.min(timeoutMs, this.#bodyIdleTimeoutMs));
    this.#headersDeadline = performance.now() + timeoutMs;
  }

  readonly #onTimeout = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    // Armed for the shorter of the two: either may still be running.
    const leftMs = this.#status === 0 ? this.#headersDeadline - now : this.#bodyIdleTimeoutMs - (now - this.#lastActivity);
    if (leftMs >= 1) {
      this.#timer = setTimeout(this.#onTimeout, leftMs);
      return;
    }
    this.#cancel(new UpstreamTimeout(this.#status === 0 ? 'headers' : 'body'));
  };

  readonly onClientClose = (): void => {
    if (this.#finished) return;
    // The client left before the response was complete: cancel the work at the instance too.
    this.#cancel(new ClientGone());
  };

  /** Aborts the request down to the instance's socket; the outcome comes through onResponseError. */
  #cancel(reason: Error): void {
    if (this.#controller) {
      this.#controller.abort(reason);
      return;
    }
    // Still queued in undici, which has not handed over a controller: answer now,
    // and abort once it does (onRequestStart).
    this.#cancelled = reason;
    this.onResponseError(undefined, reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#cancelled) controller.abort(this.#cancelled);
    else if (this.#res.destroyed) controller.abort(new ClientGone());
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return; // 1xx informational: not forwarded (100-continue is answered by the listener)
    this.#status = statusCode;
    this.#lastActivity = performance.now();
    // Measured: syscalls dominate a small proxied response. Corked, the head,
    // a small body and the end leave in one writev instead of two or three.
    this.#res.socket?.cork();
    this.#corked = true;
    this.#res.writeHead(statusCode, downstreamHeaders(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#bytes += chunk.length;
    this.#lastActivity = performance.now();
    if (this.#corked && this.#bytes > CORK_LIMIT) this.#uncork();
    if (!this.#res.write(chunk) && !this.#paused) {
      this.#paused = true;
      controller.pause();
      this.#res.once('drain', () => {
        this.#paused = false;
        controller.resume();
      });
    }
  }

  onResponseEnd(): void {
    this.#finished = true;
    clearTimeout(this.#timer);
    this.#res.end();
    this.#uncork();
    this.#done({ ok: true, status: this.#status, bytesOut: this.#bytes });
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    const outcome = classify(err);
    this.#uncork();
    const responded = this.#res.headersSent;
    // Headers already went out: the only honest signal left is to cut the response.
    if (responded) this.#res.destroy(err);
    this.#done({ ...outcome, responded, bytesOut: this.#bytes, status: responded ? this.#status : 0 });
  }

  #uncork(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#res.socket?.uncork();
  }
}

/** Past this many body bytes a response streams as it comes instead of waiting corked. */
const CORK_LIMIT = 16 * 1024;

class UpstreamTimeout extends Error {
  override name = 'UpstreamTimeout';
  constructor(readonly phase: 'headers' | 'body') {
    super(phase === 'headers' ? 'the instance did not answer in time' : 'the instance stopped sending the response body');
  }
}

class ClientGone extends Error {
  override name = 'ClientGone';
  constructor() {
    super('the client closed the connection');
  }
}

function classify(err: Error): { ok: false; failure: UpstreamFailure | 'client'; code: ErrorCode; message: string } {
  if (err instanceof ClientGone) return { ok: false, failure: 'client', code: 'BERTH_ERR_UPSTREAM_RESET', message: err.message };
  if (err instanceof UpstreamTimeout) return { ok: false, failure: 'timeout', code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: err.message };
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return { ok: false, failure: 'timeout', code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: 'the instance did not answer in time' };
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return { ok: false, failure: 'connect', code: 'BERTH_ERR_UPSTREAM_CONNECT', message: `cannot connect to the instance (${code})` };
    default:
      return { ok: false, failure: 'reset', code: 'BERTH_ERR_UPSTREAM_RESET', message: `the instance closed the connection (${code ?? err.message})` };
  }
}
