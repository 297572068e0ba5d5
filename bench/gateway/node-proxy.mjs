// The floor for a Node gateway: node:http in front, Berth's own HTTP/1.1
// client to the instances behind (src/gateway/http1/client.ts, compiled), the
// same prefix strip and keep-alive as Berth, nothing else (no route table, no
// request id, no X-Forwarded-*, no policies, no observer). An optional bench
// target (--targets …,node-proxy): what Berth costs above it is Berth's own
// work. CLIENT=undici puts undici's Agent.dispatch behind instead (the client
// Berth's gateway used before it had its own; docs/performance.md).
import { createServer } from 'node:http';
import { Agent } from 'undici';
import { UpstreamClient } from '../../dist/src/gateway/http1/client.js';

const prefix = process.env.PREFIX ?? '/bench/echo';
const origins = (process.env.INSTANCES ?? '').split(',').filter(Boolean).map((a) => `http://${a}`);
if (origins.length === 0) throw new Error('INSTANCES=host:port[,host:port…] is required');
const undici = process.env.CLIENT === 'undici';
const client = undici
  ? new Agent({ connections: 256, keepAliveTimeout: 4_000 })
  : new UpstreamClient({ connections: 256, keepAliveTimeoutMs: 4_000, keepAliveMaxTimeoutMs: 60_000, connectTimeoutMs: 10_000 });
let next = 0;
const HOP = new Set(['connection', 'keep-alive', 'host', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-connection']);

const server = createServer({ keepAliveTimeout: 65_000, noDelay: true }, (req, res) => {
  const origin = origins[next];
  next = (next + 1) % origins.length;
  const path = req.url.startsWith(prefix) ? req.url.slice(prefix.length) || '/' : req.url;
  const headers = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) headers.push(raw[i], raw[i + 1]);
  client.dispatch(
    { origin, path, method: req.method, headers, body: null },
    {
      onRequestStart() {},
      onResponseStart(_c, status, headers) {
        if (undici) {
          delete headers.connection;
          delete headers['keep-alive'];
        }
        res.writeHead(status, headers);
      },
      onResponseData(_c, chunk) {
        res.write(chunk);
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError(_c, err) {
        if (res.headersSent) res.destroy(err);
        else res.writeHead(502, { 'content-length': '0' }).end();
      },
    },
  );
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => process.stdout.write(`listening on ${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
