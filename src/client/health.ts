import type { IncomingMessage, ServerResponse } from 'node:http';

/** What a health check found: Berth's checks read 200 as passing, 429 as warning, anything else as critical (docs/health.md). */
export type HealthStatus = 'passing' | 'warning' | 'critical';

export interface HealthOptions {
  /** The path it answers. Default `/health`, the path examples and manifests use. */
  path?: string;
  /**
   * The service's own verdict (a database ping, a queue's depth): `true`,
   * `undefined` or `'passing'` is passing, `'warning'` warning, `false` or
   * `'critical'` critical, and a throw is critical with its message.
   */
  check?: () => boolean | HealthStatus | undefined | Promise<boolean | HealthStatus | undefined>;
}

const STATUS_CODES: Record<HealthStatus, number> = { passing: 200, warning: 429, critical: 503 };

/**
 * A health endpoint for node:http: `GET`/`HEAD` on the path answers
 * `{"status": "passing", "instance": …}` with the status code Berth's HTTP
 * check reads. Returns whether it handled the request, so it goes first in a
 * request listener:
 *
 * ```js
 * const health = healthHandler({ check: () => db.ping() });
 * http.createServer((req, res) => { if (health(req, res)) return; … });
 * ```
 */
export function healthHandler(options: HealthOptions = {}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const path = options.path ?? '/health';
  const check = options.check;
  return (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    if ((q === -1 ? url : url.slice(0, q)) !== path || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
    const send = (status: HealthStatus, output?: string): void => {
      if (res.headersSent || res.destroyed) return;
      const body = JSON.stringify({ status, instance: process.env.BERTH_INSTANCE ?? null, ...(output !== undefined ? { output } : {}) });
      res.writeHead(STATUS_CODES[status], { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (check === undefined) {
      send('passing');
      return true;
    }
    Promise.resolve()
      .then(check)
      .then(
        (verdict) => send(verdict === undefined || verdict === true || verdict === 'passing' ? 'passing' : verdict === 'warning' ? 'warning' : 'critical'),
        (err: unknown) => send('critical', err instanceof Error ? err.message : String(err)),
      )
      .catch(() => res.destroy());
    return true;
  };
}
