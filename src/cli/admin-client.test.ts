import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { once } from 'node:events';
import { isBerthError } from '../errors.js';
import { AdminClient } from './admin-client.js';

function tcpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP')).length;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

describe('AdminClient', () => {
  let baseline = 0;
  let server: Server;
  let client: AdminClient;
  const seen: { method: string; url: string; body: string; auth: string | undefined }[] = [];

  before(async () => {
    baseline = tcpHandles();
    ({ server } = await listen((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', body, auth: req.headers.authorization });
        if (req.url === '/v1/services') return sendJson(res, 200, [{ group: 'payments', service: 'charges' }]);
        if (req.url === '/v1/echo') return sendJson(res, 201, { method: req.method, received: JSON.parse(body) as unknown });
        if (req.url === '/v1/empty') return void res.writeHead(204).end();
        if (req.url === '/v1/weird') return sendJson(res, 500, { code: 'SOMETHING_ELSE', message: 'it broke' });
        if (req.url === '/v1/html') return void res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>bad gateway</h1>');
        if (req.url === '/v1/garbage') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{nope');
        sendJson(res, 404, {
          code: 'BERTH_ERR_NOT_FOUND',
          message: `no service "${req.url}"`,
          details: [{ where: 'path', message: 'unknown service' }, { bogus: true }],
        });
      });
    }));
    const { port } = server.address() as AddressInfo;
    client = new AdminClient(`http://127.0.0.1:${port}/`, { token: 's3cret' });
  });

  after(async () => {
    await client.close();
    await closeServer(server);
    // libuv releases a closed handle in a later loop turn's close phase; a
    // leak survives any number of turns, so a few turns tell the two apart.
    for (let turn = 0; turn < 10 && tcpHandles() > baseline; turn++) await new Promise((resolve) => setImmediate(resolve));
    // Every socket and listener the tests opened is gone: nothing keeps the process alive.
    assert.equal(tcpHandles(), baseline, `leaked handles: ${process.getActiveResourcesInfo().join(', ')}`);
  });

  it('returns-parsed-json-on-200', async () => {
    const services = await client.get<{ group: string; service: string }[]>('/v1/services');
    assert.deepEqual(services, [{ group: 'payments', service: 'charges' }]);
    assert.equal(seen.at(-1)?.auth, 'Bearer s3cret');
  });

  it('sends-json-bodies-with-post-put-delete', async () => {
    for (const method of ['post', 'put', 'delete'] as const) {
      const res = await client[method]<{ method: string; received: unknown }>('v1/echo', { replicas: 3 });
      assert.deepEqual(res, { method: method.toUpperCase(), received: { replicas: 3 } });
    }
  });

  it('returns-undefined-on-204', async () => {
    assert.equal(await client.post('/v1/empty'), undefined);
  });

  it('throws-the-node-error-code-message-and-details', async () => {
    await assert.rejects(client.get('/v1/services/nope'), (err: unknown) => {
      assert.ok(isBerthError(err, 'BERTH_ERR_NOT_FOUND'));
      assert.equal(err.message, 'no service "/v1/services/nope"');
      assert.equal(err.status, 404);
      assert.deepEqual(err.details, [{ where: 'path', message: 'unknown service' }]);
      return true;
    });
  });

  it('maps-unknown-codes-to-internal', async () => {
    await assert.rejects(client.get('/v1/weird'), (err: unknown) => {
      assert.ok(isBerthError(err, 'BERTH_ERR_INTERNAL'));
      assert.equal(err.message, 'it broke');
      return true;
    });
  });

  it('maps-non-json-errors-to-internal-with-the-status', async () => {
    await assert.rejects(client.get('/v1/html'), (err: unknown) => {
      assert.ok(isBerthError(err, 'BERTH_ERR_INTERNAL'));
      assert.match(err.message, /HTTP 502/);
      return true;
    });
  });

  it('refuses-a-2xx-body-that-is-not-json', async () => {
    await assert.rejects(client.get('/v1/garbage'), (err: unknown) => isBerthError(err, 'BERTH_ERR_INTERNAL'));
  });

  it('passes-a-caller-abort-through-unchanged', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(client.get('/v1/services', ac.signal), (err: unknown) => {
      assert.ok(!isBerthError(err));
      return true;
    });
  });

  it('reports-node-unreachable-on-connection-refused', async () => {
    // A port that was just ours and is now closed: nothing listens there.
    const { server: gone, url } = await listen(() => {});
    await closeServer(gone);
    const offline = new AdminClient(url.replace('http://', ''));
    try {
      await assert.rejects(offline.get('/v1/services'), (err: unknown) => {
        assert.ok(isBerthError(err, 'BERTH_ERR_NODE_UNREACHABLE'));
        assert.equal(err.message, `no Berth node is answering at ${url} (is \`berth up\` running? set --admin or BERTH_ADMIN)`);
        assert.equal(err.retryable, true);
        return true;
      });
    } finally {
      await offline.close();
    }
  });

  it('reports-node-unreachable-when-the-node-does-not-answer-in-time', async () => {
    // Accepts the connection and never answers.
    const { server: silent, url } = await listen(() => {});
    const slow = new AdminClient(url, { timeoutMs: 100 });
    try {
      await assert.rejects(slow.get('/v1/services'), (err: unknown) => isBerthError(err, 'BERTH_ERR_NODE_UNREACHABLE'));
    } finally {
      await slow.close();
      await closeServer(silent);
    }
  });

  it('rejects-an-address-that-is-not-a-url', () => {
    assert.throws(() => new AdminClient('http://exa mple:80'), (err: unknown) => isBerthError(err, 'BERTH_ERR_BAD_REQUEST'));
  });
});
