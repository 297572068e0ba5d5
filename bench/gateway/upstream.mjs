// The benchmark's instance: the smallest useful HTTP service. One fixed JSON
// body (100 bytes) for every GET, keep-alive on, no logging, so that what is
// measured is the path in front of it, not the service.
import { createServer } from 'node:http';

const body = Buffer.from(JSON.stringify({ service: 'echo', ok: true, message: 'hello from the berth bench instance', pad: 'x'.repeat(15) }));
const headers = { 'content-type': 'application/json', 'content-length': String(body.length) };

// Idle keep-alive connections must outlive the proxies' own idle timeouts
// (nginx 60 s, undici 4 s), so that it is never the instance that closes one
// under a request in flight; headersTimeout must not be shorter.
const server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000, noDelay: true }, (req, res) => {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'content-length': '0' });
    res.end();
    return;
  }
  res.writeHead(200, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
});

const port = Number(process.env.PORT ?? 0);
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  if (!process.env.PORT) process.stdout.write(`listening on ${server.address().port}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
