// The few things every shop service repeats: JSON answers that say which
// instance sent them (and which request id they answer), bodies read with a
// size cap, a route table, one log line per request and a graceful stop on
// SIGTERM. Only node:http; calls to other services are in calls.mjs.
import { createServer } from 'node:http';

const INSTANCE = process.env.BERTH_INSTANCE ?? null;
// Set by serve(): the version a service reports when BERTH_VERSION is unset (run by hand).
let fallbackVersion = null;

/** An error a handler throws to answer `status` with a JSON error body. */
export class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} error  short machine word: `not_found`, `too_large`…
   * @param {string} message
   */
  constructor(status, error, message) {
    super(message);
    this.status = status;
    this.error = error;
  }
}

/**
 * @param {import('node:http').ServerResponse} res
 * @param {number} status
 * @param {Record<string, unknown>} body
 * @param {Record<string, string>} [headers]
 */
export function json(res, status, body, headers = {}) {
  // The request id the gateway (or a calling service) sent: one id follows a request through every service it reaches.
  const requestId = res.req?.headers['x-request-id'];
  const text = JSON.stringify({ ...body, instance: INSTANCE, version: process.env.BERTH_VERSION ?? fallbackVersion, requestId });
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * The request body as it arrives, chunk by chunk, refusing with 413 once it
 * passes `limit` bytes: a declared Content-Length is refused before reading
 * anything, a chunked body as soon as the running total passes the cap. The
 * socket is left open so the 413 can still be sent.
 * @param {import('node:http').IncomingMessage} req
 * @param {number} limit
 * @returns {Promise<{ chunks: Buffer[], size: number }>}
 */
export function readChunks(req, limit) {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    const done = () => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
    };
    const onData = (chunk) => {
      size += chunk.length;
      if (size > limit) {
        done();
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve({ chunks, size });
    };
    const onError = (err) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(new HttpError(400, 'aborted', 'the client went away before sending the whole body'));
    };
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

/**
 * The request body as one Buffer (see readChunks).
 * @param {import('node:http').IncomingMessage} req
 * @param {number} limit
 */
export async function readBody(req, limit) {
  const { chunks, size } = await readChunks(req, limit);
  return Buffer.concat(chunks, size);
}

function tooLarge(limit) {
  return new HttpError(413, 'too_large', `body larger than ${limit} bytes`);
}

/**
 * The request body parsed as JSON (at most `limit` bytes); 400 when it is not JSON.
 * @param {import('node:http').IncomingMessage} req
 * @param {number} [limit]
 */
export async function readJson(req, limit = 64 * 1024) {
  const body = await readBody(req, limit);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'bad_json', 'request body is not valid JSON');
  }
}

const SECRET_PARAM = /^(token|access_token|password|secret|api_?key)$/i;

/** The request target for the access log, with secret-looking query values blanked. */
function redact(target) {
  const q = target.indexOf('?');
  if (q === -1) return target;
  const params = new URLSearchParams(target.slice(q + 1));
  const secret = [...params.keys()].filter((key) => SECRET_PARAM.test(key));
  if (secret.length === 0) return target;
  for (const key of secret) params.set(key, 'REDACTED');
  return `${target.slice(0, q)}?${params}`;
}

/** Turn `/profiles/:id` or `/blobs/*key` into a regular expression with named groups. */
function compile(pattern) {
  const source = pattern
    .split('/')
    .map((part) => {
      if (part.startsWith(':')) return `(?<${part.slice(1)}>[^/]+)`;
      if (part.startsWith('*')) return `(?<${part.slice(1)}>.+)`;
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return new RegExp(`^${source}$`);
}

/**
 * @typedef {{ req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse,
 *   params: Record<string, string>, query: URLSearchParams }} Context
 * @typedef {[method: string, pattern: string, handler: (ctx: Context) => unknown]} Route
 */

/**
 * Run a service: listen on 127.0.0.1:$PORT, answer `GET /health`, route the
 * rest, log each request, stop gracefully on SIGTERM/SIGINT.
 * @param {{ name: string, routes: Route[], version?: string }} options
 *   `version` is used when BERTH_VERSION is not set (running by hand).
 */
export function serve({ name, routes, version }) {
  fallbackVersion = version ?? null;
  const port = Number(process.env.PORT);
  // PORT=0 (any free port) is for tests; the listening line says which one.
  if (process.env.PORT === undefined || process.env.PORT === '' || !Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`${name}: PORT must be set to a port number (got ${JSON.stringify(process.env.PORT)})`);
    process.exit(1);
  }
  const table = [['GET', '/health', ({ res }) => json(res, 200, { status: 'ok' })], ...routes].map(
    ([method, pattern, handler]) => ({ method, regex: compile(pattern), handler }),
  );

  let stopping = false;
  const server = createServer(async (req, res) => {
    const started = performance.now();
    res.on('close', () => {
      const ms = Math.round(performance.now() - started);
      // Health checks come every second from Berth: logging them would drown the real traffic.
      if (req.url !== '/health') console.log(`${req.method} ${redact(req.url ?? '/')} ${res.writableFinished ? res.statusCode : 'aborted'} ${ms}ms`);
      // While stopping, a keep-alive connection goes as soon as its last response is out.
      if (stopping) setImmediate(() => server.closeIdleConnections());
    });
    if (stopping) res.setHeader('connection', 'close');
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
      const allowed = [];
      for (const route of table) {
        const match = route.regex.exec(path);
        if (!match) continue;
        const wanted = req.method === 'HEAD' ? 'GET' : req.method;
        if (route.method !== wanted) {
          allowed.push(route.method);
          continue;
        }
        const params = {};
        for (const [key, value] of Object.entries(match.groups ?? {})) {
          try {
            params[key] = decodeURIComponent(value);
          } catch {
            throw new HttpError(400, 'bad_request', `malformed percent-encoding in ${key}`);
          }
        }
        await route.handler({ req, res, params, query: url.searchParams });
        return;
      }
      if (allowed.length > 0) {
        throw Object.assign(new HttpError(405, 'method_not_allowed', `${req.method} is not allowed on ${path}`), {
          headers: { allow: [...new Set(allowed)].join(', ') },
        });
      }
      throw new HttpError(404, 'not_found', `no route for ${req.method} ${path}`);
    } catch (err) {
      const known = err instanceof HttpError;
      // A client that hangs up mid-download is not a fault of the service.
      const hungUp = err?.code === 'ERR_STREAM_PREMATURE_CLOSE';
      if (!known && !hungUp) console.error(`${name}: ${req.method} ${req.url} failed:`, err);
      if (res.headersSent || hungUp) {
        res.destroy();
        return;
      }
      const status = known ? err.status : 500;
      const error = known ? err.error : 'internal';
      // A body we refused may still be arriving: answer, then drop the connection
      // rather than read megabytes only to throw them away.
      const headers = { ...(known ? err.headers : {}), ...(req.complete ? {} : { connection: 'close' }) };
      json(res, status, { error, message: known ? err.message : 'internal error' }, headers);
    }
  });

  // A client that sent a half request or nothing at all gets dropped, not held forever.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  server.on('error', (err) => {
    console.error(`${name}: cannot listen on 127.0.0.1:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => {
    console.log(`${name} ${process.env.BERTH_VERSION ?? fallbackVersion ?? ''} listening on 127.0.0.1:${server.address().port}`);
  });

  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: closing, finishing in-flight requests`);
    // In-flight requests finish; idle keep-alive sockets go now, the ones in
    // use after their response. Past the grace period, cut what is left.
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => {
      console.log('grace period over: closing remaining connections');
      server.closeAllConnections();
    }, 5000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return server;
}

/** A short random id with a prefix: `ch_3f9a1c…`. */
export function newId(prefix) {
  return `${prefix}_${crypto.randomUUID().replaceAll('-', '').slice(0, 16)}`;
}
