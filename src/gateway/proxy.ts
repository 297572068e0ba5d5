import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { ErrorCode } from '../errors.js';
import { BodyTooLarge } from './body-limit.js';
import { downstreamHeaders } from './headers.js';
import { ResponseParseError, type UpstreamClient, type UpstreamController, type UpstreamHandler } from './http1/client.js';

/** Why a try failed without a response the client got. */
export type TryFailure = 'connect' | 'reset' | 'timeout' | 'client' | 'too-large';

/** How one try at an instance ended. */
export type TryOutcome =
  /** The instance's response went to the client, complete. */
  | { kind: 'response'; status: number; bytesOut: number }
  /** The instance answered a status the caller chose to retry: nothing went to the client. */
  | { kind: 'discarded'; status: number }
  /** No complete response: `responded` says whether the client already got its head (and then a cut body). */
  | { kind: 'failed'; failure: TryFailure; code: ErrorCode; message: string; responded: boolean; status: number; bytesOut: number };

export interface TryOptions {
  client: UpstreamClient;
  origin: string;
  path: string;
  headers: string[];
  body: Readable | null;
  /** From dispatch until the response's headers: past it, the try fails with `timeout`. */
  headersTimeoutMs: number;
  /** Silence while the response body streams: past it, the response is cut. */
  bodyIdleTimeoutMs: number;
  /** Set on the response (over the instance's own copy). */
  requestId: string;
}

/** Who sent the try: asked what to do with its status, told how it ended. (An object, not two closures per try.) */
export interface TryListener {
  /** Asked once the status is known: true keeps the response from the client (the caller retries it). */
  discard(status: number): boolean;
  tryEnded(outcome: TryOutcome): void;
}

/** A try in flight, for its caller to cancel (the client left, the deadline passed). */
export interface Try {
  cancel(reason: 'client' | 'timeout'): void;
}

/**
 * Sends one try to an instance and streams its response back, both ways
 * without buffering: the instance's body is paused while the client cannot
 * keep up. Cancelling aborts the request down to the instance's socket.
 */
export function sendTry(res: ServerResponse, options: TryOptions, listener: TryListener): Try {
  const handler = new TryHandler(res, options, listener);
  // The timeouts are the handler's own: one native timer per try (a timer
  // object per request kept past its use was, under undici, most of the GC
  // behind the p99 tail: docs/performance.md). Retries are the gateway's
  // decision (policies), never the client's.
  options.client.dispatch({ origin: options.origin, path: options.path, method: res.req.method ?? 'GET', headers: options.headers, body: options.body }, handler);
  return handler;
}

class TryHandler implements UpstreamHandler, Try {
  readonly #res: ServerResponse;
  readonly #options: TryOptions;
  readonly #listener: TryListener;
  #controller: UpstreamController | undefined;
  /**
   * One timer per try: armed for the headers timeout (or the body's idle
   * timeout if shorter); when it fires after the response started, it re-arms
   * itself until the body has been silent for the idle timeout. (A second timer
   * per request, or a refresh per chunk, costs more than a clock read per chunk.)
   */
  #timer: NodeJS.Timeout | undefined;
  #headersDeadline: number;
  /** performance.now() of the response's start or its latest body chunk. */
  #lastActivity = 0;
  /** Why the try was cancelled before the client handed over its controller. */
  #cancelled: Error | undefined;
  #status = 0;
  #bytes = 0;
  #finished = false;
  #discarding = false;
  #paused = false;
  #corked = false;

  constructor(res: ServerResponse, options: TryOptions, listener: TryListener) {
    this.#res = res;
    this.#options = options;
    this.#listener = listener;
    this.#headersDeadline = performance.now() + options.headersTimeoutMs;
    this.#timer = setTimeout(this.#onTimeout, Math.min(options.headersTimeoutMs, options.bodyIdleTimeoutMs));
  }

  readonly #onTimeout = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    // Armed for the shorter of the two: either may still be running.
    const leftMs = this.#status === 0 ? this.#headersDeadline - now : this.#options.bodyIdleTimeoutMs - (now - this.#lastActivity);
    if (leftMs >= 1) {
      this.#timer = setTimeout(this.#onTimeout, leftMs);
      return;
    }
    this.cancel('timeout');
  };

  cancel(reason: 'client' | 'timeout'): void {
    if (this.#finished) return;
    const err = reason === 'client' ? new ClientGone() : new TryTimeout(this.#status === 0 ? 'headers' : 'body');
    if (this.#controller) {
      // The outcome comes through onResponseError.
      this.#controller.abort(err);
      return;
    }
    // Not yet handed to the client, which has not given a controller: end now, abort once it does.
    this.#cancelled = err;
    this.onResponseError(undefined, err);
  }

  onRequestStart(controller: UpstreamController): void {
    this.#controller = controller;
    if (this.#cancelled) controller.abort(this.#cancelled);
    else if (this.#res.destroyed) controller.abort(new ClientGone());
  }

  onResponseStart(_controller: UpstreamController, statusCode: number, headers: string[]): void {
    // (1xx informational responses are skipped by the client: 100-continue is answered by the listener.)
    this.#status = statusCode;
    this.#lastActivity = performance.now();
    if (this.#listener.discard(statusCode)) {
      this.#discarding = true;
      return;
    }
    // Measured: syscalls dominate a small proxied response. Corked, the head,
    // a small body and the end leave in one writev instead of two or three.
    this.#res.socket?.cork();
    this.#corked = true;
    this.#res.writeHead(statusCode, downstreamHeaders(headers, this.#options.requestId));
  }

  onResponseData(controller: UpstreamController, chunk: Buffer): void {
    this.#lastActivity = performance.now();
    if (this.#discarding) {
      // Read to the end, so the connection stays reusable; a large error body is not worth it.
      this.#bytes += chunk.length;
      if (this.#bytes > DISCARD_LIMIT) controller.abort(new DiscardLimit());
      return;
    }
    this.#bytes += chunk.length;
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
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    if (this.#discarding) {
      this.#listener.tryEnded({ kind: 'discarded', status: this.#status });
      return;
    }
    this.#res.end();
    this.#uncork();
    this.#listener.tryEnded({ kind: 'response', status: this.#status, bytesOut: this.#bytes });
  }

  onResponseError(_controller: UpstreamController | undefined, err: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    if (err instanceof DiscardLimit) {
      this.#listener.tryEnded({ kind: 'discarded', status: this.#status });
      return;
    }
    this.#uncork();
    const responded = !this.#discarding && this.#res.headersSent;
    // Headers already went out: the only honest signal left is to cut the response.
    if (responded) this.#res.destroy(err);
    this.#listener.tryEnded({ kind: 'failed', ...classify(err), responded, bytesOut: responded ? this.#bytes : 0, status: responded ? this.#status : 0 });
  }

  #uncork(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#res.socket?.uncork();
  }
}

/** Past this many body bytes a response streams as it comes instead of waiting corked. */
const CORK_LIMIT = 16 * 1024;
/** A retried response's body is read to its end up to this size (keeping the connection), else the connection is dropped. */
const DISCARD_LIMIT = 64 * 1024;

class TryTimeout extends Error {
  override name = 'TryTimeout';
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

class DiscardLimit extends Error {
  override name = 'DiscardLimit';
}

function classify(err: Error): { failure: TryFailure; code: ErrorCode; message: string } {
  if (err instanceof ClientGone) return { failure: 'client', code: 'BERTH_ERR_UPSTREAM_RESET', message: err.message };
  if (err instanceof TryTimeout) return { failure: 'timeout', code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: err.message };
  if (err instanceof BodyTooLarge) return { failure: 'too-large', code: 'BERTH_ERR_BODY_TOO_LARGE', message: err.message };
  if (err instanceof ResponseParseError) return { failure: 'reset', code: 'BERTH_ERR_UPSTREAM_RESET', message: `the instance sent an invalid response: ${err.message}` };
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'BERTH_UPSTREAM_CONNECT_TIMEOUT':
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return { failure: 'connect', code: 'BERTH_ERR_UPSTREAM_CONNECT', message: `cannot connect to the instance (${code})` };
    default:
      return { failure: 'reset', code: 'BERTH_ERR_UPSTREAM_RESET', message: `the instance closed the connection (${code ?? err.message})` };
  }
}
