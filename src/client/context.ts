import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import { requestIdOf, TIMEOUT_HEADER } from '../gateway/headers.js';

export { TIMEOUT_HEADER };
/** The header that carries the correlation id, on every request and response through Berth. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** As the gateway accepts it: visible ASCII, at most 200 characters. */
const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** `id` when it is a request id the gateway would keep, else undefined. */
export function saneRequestId(id: unknown): string | undefined {
  return typeof id === 'string' && REQUEST_ID.test(id) ? id : undefined;
}

/** What a call made while handling a request carries on from it. */
export interface CallContext {
  /** The incoming request's `x-request-id` (a new UUID when it had none). */
  readonly requestId: string;
  /**
   * What is left, now, of the time the incoming request was given
   * (`x-berth-timeout-ms`, counted from when `fromRequest` first saw it);
   * undefined when it came without one. Read when the object is spread.
   */
  readonly timeoutMs: number | undefined;
}

const seen = new WeakMap<IncomingMessage, CallContext>();

/**
 * The request id and deadline of an incoming request, to pass on to the calls
 * made while handling it: `client.request('profiles', '/x', { ...fromRequest(req) })`.
 * A chain of calls so shares one deadline and one correlation id. The same
 * request gives the same context (its deadline counted from the first call).
 */
export function fromRequest(req: IncomingMessage): CallContext {
  const known = seen.get(req);
  if (known !== undefined) return known;
  const requestId = requestIdOf(req);
  const given = Number(req.headers[TIMEOUT_HEADER]);
  const deadline = Number.isSafeInteger(given) && given > 0 ? performance.now() + given : undefined;
  const context: CallContext = Object.defineProperties({} as CallContext, {
    requestId: { value: requestId, enumerable: true },
    // A getter, so that `{ ...context }` at call time takes what is left then, not when the request arrived.
    timeoutMs: { get: () => (deadline === undefined ? undefined : Math.max(0, Math.floor(deadline - performance.now()))), enumerable: true },
  });
  seen.set(req, context);
  return context;
}
