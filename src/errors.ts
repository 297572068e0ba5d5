/**
 * Every error Berth raises on purpose. The `code` is stable (scripts and
 * docs/errors.md depend on it); the message is for people.
 */
export const ErrorCodes = {
  BERTH_ERR_MANIFEST_NOT_FOUND: { status: 400, retryable: false, summary: 'The manifest file does not exist or cannot be read.' },
  BERTH_ERR_MANIFEST_SYNTAX: { status: 400, retryable: false, summary: 'The manifest is not valid YAML.' },
  BERTH_ERR_MANIFEST_INVALID: { status: 400, retryable: false, summary: 'The manifest is valid YAML but breaks the schema; every problem is listed with file:line and path.' },
  BERTH_ERR_STORE_CORRUPT: { status: 500, retryable: false, summary: 'The embedded store file in the data dir cannot be parsed.' },
  BERTH_ERR_STORE_CLOSED: { status: 503, retryable: false, summary: 'An operation was attempted on a store that was closed.' },
  BERTH_ERR_NODE_RUNNING: { status: 409, retryable: false, summary: 'Another Berth node already owns this data dir.' },
  BERTH_ERR_LISTEN: { status: 500, retryable: false, summary: 'A listener could not bind its address (in use, or not permitted).' },
  BERTH_ERR_TLS_MATERIAL: { status: 500, retryable: false, summary: 'A TLS certificate, key or CA file cannot be read or parsed, or a certificate does not match its key; the message names the file.' },
  BERTH_ERR_SPAWN: { status: 500, retryable: true, summary: 'An instance process could not be started (command not found, cwd missing, not permitted).' },
  BERTH_ERR_ISOLATION: { status: 500, retryable: false, summary: 'A service\'s user, resource limits or sandbox cannot be set up on this machine (no cgroup controller, not root, no bubblewrap, unknown user); the message says which and why.' },
  BERTH_ERR_NO_PORT: { status: 500, retryable: true, summary: 'No free port could be found for an instance.' },
  BERTH_ERR_NOT_FOUND: { status: 404, retryable: false, summary: 'The admin API has no such resource (service, instance, route).' },
  BERTH_ERR_BAD_REQUEST: { status: 400, retryable: false, summary: 'The admin API request is malformed; `details` lists each problem.' },
  BERTH_ERR_NODE_UNREACHABLE: { status: 503, retryable: true, summary: 'The CLI or berth/client could not reach a node\'s admin API (no node running at that address).' },
  BERTH_ERR_INTERNAL: { status: 500, retryable: false, summary: 'A bug in Berth; the log has the stack trace, the response never does.' },
  BERTH_ERR_STORE_COMPACTED: { status: 410, retryable: false, summary: 'A watch asked to resume from a revision older than the store still holds; list again and watch from the new revision.' },
  BERTH_ERR_CATALOG_CLOSED: { status: 503, retryable: false, summary: 'An operation was attempted on a catalog that was closed.' },
  BERTH_ERR_RELOAD_REFUSED: { status: 409, retryable: false, summary: 'A reload was refused: the new manifest changes a setting that needs a restart, or the node is not running.' },
  BERTH_ERR_NO_ROUTE: { status: 404, retryable: false, summary: 'The gateway has no route for the request: no group, service or version matches it.' },
  BERTH_ERR_NO_INSTANCE: { status: 503, retryable: true, summary: 'The route exists but no instance of the selected version is passing.' },
  BERTH_ERR_BAD_PATH: { status: 400, retryable: false, summary: 'The request target has no safe canonical form: an encoded slash, backslash or control character, a bad escape, a climb above the root, or an absolute URL.' },
  BERTH_ERR_BAD_FRAMING: { status: 400, retryable: false, summary: 'The request is framed ambiguously (two Host or Authorization headers, Transfer-Encoding in HTTP/1.0); the connection is closed after the answer.' },
  BERTH_ERR_TOO_MANY_HEADERS: { status: 431, retryable: false, summary: 'The request has more than 100 header lines.' },
  BERTH_ERR_TRANSFER_CODING: { status: 501, retryable: false, summary: 'The request uses a transfer coding other than chunked; the connection is closed after the answer.' },
  BERTH_ERR_BAD_VERSION: { status: 400, retryable: false, summary: 'The Accept-Version header is not a semver range.' },
  BERTH_ERR_UPSTREAM_CONNECT: { status: 502, retryable: true, summary: 'The gateway could not connect to the instance it picked.' },
  BERTH_ERR_UPSTREAM_RESET: { status: 502, retryable: true, summary: 'The instance closed the connection before a complete response.' },
  BERTH_ERR_UPSTREAM_TIMEOUT: { status: 504, retryable: true, summary: 'The instance did not answer within the request\'s timeout (the service\'s `timeout`, retries included, or less when the client sent `x-berth-timeout-ms`).' },
  BERTH_ERR_UPSTREAM_STATUS: { status: 503, retryable: true, summary: 'Every try answered a retryable status (502, 503, 504 by default) and no retry was left: the client gets the last status with this body instead of the instance\'s.' },
  BERTH_ERR_CIRCUIT_OPEN: { status: 503, retryable: true, summary: 'The service\'s circuit breaker is open after too many failures; `Retry-After` says when it tries again.' },
  BERTH_ERR_OVERLOADED: { status: 503, retryable: true, summary: 'The service has as many requests in flight and waiting as its `limits` allow; `Retry-After: 1`.' },
  BERTH_ERR_METHOD_NOT_ALLOWED: { status: 405, retryable: false, summary: 'The route allows other methods only (`methods` in the manifest); `Allow` lists them.' },
  BERTH_ERR_BODY_TOO_LARGE: { status: 413, retryable: false, summary: 'The request body is larger than the route\'s `maxBody` (declared by Content-Length, or counted as a chunked body streamed); the connection is closed after the answer.' },
  BERTH_ERR_RATE_LIMITED: { status: 429, retryable: true, summary: 'The client address or the authenticated subject sent more requests than its `rateLimit` allows; `Retry-After` and the `RateLimit-*` headers say when to come back.' },
  BERTH_ERR_REGISTRATION_CONFLICT: { status: 409, retryable: false, summary: 'The registration request conflicts with the instance: it is supervised, checked over HTTP (no heartbeats), or tracked by another node.' },
  BERTH_ERR_UNAUTHORIZED: { status: 401, retryable: false, summary: 'The admin API request carries no bearer token, or one the node does not know (mistyped, revoked).' },
  BERTH_ERR_FORBIDDEN: { status: 403, retryable: false, summary: 'The admin API request\'s token has a role too low for the route (viewer < operator < admin); or, at the gateway, the authenticated caller is admitted by no `authorize` rule of the route (default deny), or its API key is not for this group.' },
  BERTH_ERR_UNAUTHENTICATED: { status: 401, retryable: false, summary: 'A gateway request to a service whose `auth` needs credentials came without any (and the service admits no anonymous caller), or with a JWT or API key that does not verify; the message says what was wrong, never the credential.' },
  BERTH_ERR_AUTH_CONFIG: { status: 400, retryable: false, summary: 'An auth setting cannot be put to use: a secret\'s environment variable is unset or too short, a key file is missing or holds no usable key, or an issuer\'s algorithms do not fit its keys; the message names the variable or file, never the value.' },
  BERTH_ERR_CLIENT_CLOSED: { status: 503, retryable: false, summary: 'A call was made through a berth/client after its close().' },
} as const satisfies Record<string, { status: number; retryable: boolean; summary: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

export interface ErrorDetail {
  /** Where: `file:line`, a YAML path, or a request field. */
  where?: string;
  message: string;
}

export class BerthError extends Error {
  override name = 'BerthError';
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly details: readonly ErrorDetail[];

  constructor(code: ErrorCode, message: string, options: { details?: readonly ErrorDetail[]; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = ErrorCodes[code].status;
    this.retryable = ErrorCodes[code].retryable;
    this.details = options.details ?? [];
  }

  toJSON(): { code: ErrorCode; message: string; details?: readonly ErrorDetail[] } {
    return this.details.length > 0
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message };
  }
}

export function isBerthError(err: unknown, code?: ErrorCode): err is BerthError {
  return err instanceof BerthError && (code === undefined || err.code === code);
}
