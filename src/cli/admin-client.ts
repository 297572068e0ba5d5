import { Agent, request } from 'undici';
import type { Dispatcher } from 'undici';
import type { ErrorCode, ErrorDetail } from '../errors.js';
import { BerthError, ErrorCodes } from '../errors.js';

export interface AdminClientOptions {
  /** Connect, headers and body timeout, each; 5 s by default. */
  timeoutMs?: number;
  /** Sent as `authorization: Bearer <token>` when set. */
  token?: string;
  /** Where the token came from (`--token`, `BERTH_TOKEN`, a file), named when the node refuses it. */
  tokenFrom?: string;
}

// Errors that mean "nothing usable answers at that address", as opposed to a
// node that answered with an error: the CLI tells the user to start one.
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

function errorCodes(err: unknown): string[] {
  if (typeof err !== 'object' || err === null) return [];
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  const own = typeof e.code === 'string' ? [e.code] : [];
  // Happy-eyeballs connects fail with an AggregateError holding one error per address.
  const nested = Array.isArray(e.errors) ? e.errors.flatMap(errorCodes) : [];
  return [...own, ...nested, ...(e.cause !== undefined && e.cause !== err ? errorCodes(e.cause) : [])];
}

function isKnownCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ErrorCodes, code);
}

function parseDetails(value: unknown): ErrorDetail[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const details: ErrorDetail[] = [];
  for (const d of value as unknown[]) {
    if (typeof d !== 'object' || d === null) continue;
    const { where, message } = d as { where?: unknown; message?: unknown };
    if (typeof message !== 'string') continue;
    details.push(typeof where === 'string' ? { where, message } : { message });
  }
  return details;
}

/**
 * The CLI's view of a node's admin API. Every failure is a BerthError: the
 * node's own error code when it sent one, BERTH_ERR_NODE_UNREACHABLE when
 * nothing answered.
 */
export class AdminClient {
  readonly baseUrl: string;
  readonly #agent: Agent;
  readonly #token: string | undefined;
  readonly #tokenFrom: string | undefined;

  constructor(baseUrl: string, options: AdminClientOptions = {}) {
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(baseUrl) ? baseUrl : `http://${baseUrl}`;
    let url: URL;
    try {
      url = new URL(withScheme);
    } catch (cause) {
      throw new BerthError('BERTH_ERR_BAD_REQUEST', `invalid admin address "${baseUrl}": expected http://HOST:PORT`, { cause });
    }
    this.baseUrl = url.href.replace(/\/+$/, '');
    const timeout = options.timeoutMs ?? 5000;
    this.#agent = new Agent({ connect: { timeout }, headersTimeout: timeout, bodyTimeout: timeout });
    this.#token = options.token;
    this.#tokenFrom = options.tokenFrom;
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.#send<T>('GET', path, undefined, signal);
  }

  post<T>(path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    return this.#send<T>('POST', path, body, signal);
  }

  put<T>(path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    return this.#send<T>('PUT', path, body, signal);
  }

  delete<T>(path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    return this.#send<T>('DELETE', path, body, signal);
  }

  /** Closes the pooled connections; pending requests finish first. */
  close(): Promise<void> {
    return this.#agent.close();
  }

  async #send<T>(method: Dispatcher.HttpMethod, path: string, body: unknown, signal: AbortSignal | undefined): Promise<T> {
    const url = this.baseUrl + (path.startsWith('/') ? path : `/${path}`);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;

    let status: number;
    let text: string;
    try {
      const res = await request(url, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        dispatcher: this.#agent,
        signal: signal ?? null,
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      // A cancellation by the caller is not the node's fault: pass it on as is.
      if (signal?.aborted === true) throw err;
      if (errorCodes(err).some((c) => UNREACHABLE_CODES.has(c))) {
        throw new BerthError(
          'BERTH_ERR_NODE_UNREACHABLE',
          `no Berth node is answering at ${this.baseUrl} (is \`berth up\` running? set --admin or BERTH_ADMIN)`,
          { cause: err },
        );
      }
      throw new BerthError('BERTH_ERR_INTERNAL', `${method} ${url} failed: ${(err as Error).message}`, { cause: err });
    }

    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch (cause) {
      if (status >= 200 && status < 300) {
        throw new BerthError('BERTH_ERR_INTERNAL', `${method} ${url} answered ${status} with a body that is not JSON`, { cause });
      }
      json = undefined;
    }
    if (status >= 200 && status < 300) return json as T;

    const e = (typeof json === 'object' && json !== null ? json : {}) as { code?: unknown; message?: unknown; details?: unknown };
    let message = typeof e.message === 'string' && e.message !== '' ? e.message : `${method} ${url} answered HTTP ${status}`;
    if (e.code === 'BERTH_ERR_UNAUTHORIZED') {
      message = this.#token === undefined
        ? `${message}; pass --token or set BERTH_TOKEN (on the node's machine, -f naming the node's manifest is enough: the CLI reads the admin-token file in its data dir)`
        : `the node refused the token from ${this.#tokenFrom ?? 'the options'}: ${message}`;
    }
    const details = parseDetails(e.details);
    throw new BerthError(isKnownCode(e.code) ? e.code : 'BERTH_ERR_INTERNAL', message, details === undefined ? {} : { details });
  }
}
