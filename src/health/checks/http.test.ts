import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { makeCerts, type Certs } from '../../../test/support/certs.js';
import type { CheckSpec } from '../../manifest/types.js';
import type { CheckTarget } from '../types.js';
import { HttpCheck, closeHttpChecks, type ConnectOptions } from './http.js';
import { createCheck } from './index.js';

type HttpSpec = Extract<CheckSpec, { kind: 'http' }>;

const spec = (over: Partial<HttpSpec> = {}): HttpSpec => ({ kind: 'http', path: '/health', method: 'GET', headers: {}, ...over });
const target = (port: number): CheckTarget => ({ host: '127.0.0.1', port, cwd: process.cwd(), env: {} });

interface TestServer {
  port: number;
  sockets: Socket[];
  close(): Promise<void>;
}

async function serve(handler: http.RequestListener, tls?: https.ServerOptions): Promise<TestServer> {
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  const sockets: Socket[] = [];
  server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => sockets.push(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    sockets,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = await serve(() => {});
  await server.close();
  return server.port;
}

/** Resolves when the server side of a connection is closed, whether the client hung up cleanly or reset it. */
function closed(socket: Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  socket.on('error', () => {});
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

const signal = (): AbortSignal => new AbortController().signal;

describe('HttpCheck', { timeout: 10_000 }, () => {
  after(() => closeHttpChecks());

  it('passes-on-2xx-and-sends-method-path-and-headers', async () => {
    let seen: http.IncomingHttpHeaders | undefined;
    let line = '';
    const server = await serve((req, res) => {
      seen = req.headers;
      line = `${req.method} ${req.url}`;
      res.end('ok');
    });
    try {
      const result = await new HttpCheck(spec({ path: '/ready?full=1', headers: { 'X-Probe': 'yes' } })).run(target(server.port), signal());
      assert.deepEqual(result, { status: 'passing', output: 'HTTP 200' });
      assert.equal(line, 'GET /ready?full=1');
      assert.equal(seen?.['x-probe'], 'yes');
      assert.equal(seen?.['user-agent'], 'berth-health-check');
    } finally {
      await server.close();
    }
  });

  it('uses-head-when-asked', async () => {
    let method = '';
    const server = await serve((req, res) => {
      method = req.method ?? '';
      res.statusCode = 204;
      res.end();
    });
    try {
      const result = await new HttpCheck(spec({ method: 'HEAD' })).run(target(server.port), signal());
      assert.deepEqual(result, { status: 'passing', output: 'HTTP 204' });
      assert.equal(method, 'HEAD');
    } finally {
      await server.close();
    }
  });

  it('is-critical-on-503-with-the-start-of-the-body', async () => {
    const server = await serve((_req, res) => {
      res.statusCode = 503;
      res.end('database\n  down');
    });
    try {
      const result = await new HttpCheck(spec()).run(target(server.port), signal());
      assert.deepEqual(result, { status: 'critical', output: 'HTTP 503: database down' });
    } finally {
      await server.close();
    }
  });

  it('is-a-warning-on-429', async () => {
    const server = await serve((_req, res) => {
      res.statusCode = 429;
      res.end();
    });
    try {
      const result = await new HttpCheck(spec()).run(target(server.port), signal());
      assert.deepEqual(result, { status: 'warning', output: 'HTTP 429' });
    } finally {
      await server.close();
    }
  });

  it('is-critical-on-a-redirect', async () => {
    const server = await serve((_req, res) => {
      res.writeHead(302, { location: '/elsewhere' });
      res.end();
    });
    try {
      const result = await new HttpCheck(spec()).run(target(server.port), signal());
      assert.equal(result.status, 'critical');
      assert.equal(result.output, 'HTTP 302');
    } finally {
      await server.close();
    }
  });

  it('reads-at-most-a-capped-body-and-closes-the-connection', async () => {
    const server = await serve((_req, res) => {
      res.statusCode = 500;
      // 8 MiB: far more than the check reads; it must not wait for all of it.
      const chunk = Buffer.alloc(64 * 1024, 'x');
      let left = 128;
      const pump = (): void => {
        while (left > 0 && !res.destroyed) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (left === 0) res.end();
      };
      pump();
    });
    try {
      const result = await new HttpCheck(spec()).run(target(server.port), signal());
      assert.equal(result.status, 'critical');
      assert.match(result.output, /^HTTP 500: x+$/);
      assert.ok(result.output.length <= 'HTTP 500: '.length + 200);
      const socket = server.sockets[0];
      assert.ok(socket);
      await closed(socket);
    } finally {
      await server.close();
    }
  });

  it('leaves-no-connection-open-after-a-passing-check', async () => {
    const server = await serve((_req, res) => res.end('ok'));
    try {
      await new HttpCheck(spec()).run(target(server.port), signal());
      const socket = server.sockets[0];
      assert.ok(socket);
      await closed(socket);
      assert.equal(server.sockets.length, 1);
    } finally {
      await server.close();
    }
  });

  it('probes-the-spec-port-over-the-instance-port', async () => {
    const server = await serve((_req, res) => res.end());
    try {
      const result = await new HttpCheck(spec({ port: server.port })).run(target(await closedPort()), signal());
      assert.deepEqual(result, { status: 'passing', output: 'HTTP 200' });
    } finally {
      await server.close();
    }
  });

  it('is-critical-with-the-error-code-when-refused', async () => {
    const result = await new HttpCheck(spec()).run(target(await closedPort()), signal());
    assert.deepEqual(result, { status: 'critical', output: 'connect ECONNREFUSED' });
  });

  it('abort-cancels-a-hanging-request-down-to-the-socket', async () => {
    const controller = new AbortController();
    const server = await serve(() => {
      // Never answers: only the abort can end this check.
      controller.abort(new Error('timeout'));
    });
    try {
      const result = await new HttpCheck(spec()).run(target(server.port), controller.signal);
      assert.deepEqual(result, { status: 'critical', output: 'timeout' });
      const socket = server.sockets[0];
      assert.ok(socket, 'the server saw the connection');
      await closed(socket);
      assert.equal(socket.closed, true);
    } finally {
      await server.close();
    }
  });

  it('abort-while-the-body-streams-ends-the-check', async () => {
    const controller = new AbortController();
    const server = await serve((_req, res) => {
      res.writeHead(200);
      res.write('partial');
      // Headers are out and the body never ends.
      setImmediate(() => controller.abort(new Error('timeout')));
    });
    try {
      const result = await new HttpCheck(spec()).run(target(server.port), controller.signal);
      // A 2xx whose body never ends is not a pass: the check reads the body before it judges.
      assert.deepEqual(result, { status: 'critical', output: 'timeout' });
      const socket = server.sockets[0];
      assert.ok(socket);
      await closed(socket);
    } finally {
      await server.close();
    }
  });

  it('is-critical-at-once-when-already-aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    const result = await new HttpCheck(spec()).run(target(1), controller.signal);
    assert.deepEqual(result, { status: 'critical', output: 'timeout' });
  });
});

describe('HttpCheck over TLS', { timeout: 10_000 }, () => {
  let root: string;
  let certs: Certs;
  let clientTls: ConnectOptions;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'berth-http-check-'));
    certs = await makeCerts(root);
    clientTls = { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key, rejectUnauthorized: true };
  });
  after(async () => {
    await closeHttpChecks();
    await rm(root, { recursive: true, force: true });
  });

  /** An instance that only talks to clients with a certificate from the test CA; answers with the client's CN. */
  const mutualTls = (): Promise<TestServer> =>
    serve(
      (req, res) => res.end((req.socket as TLSSocket).getPeerCertificate().subject.CN),
      { cert: certs.server.cert, key: certs.server.key, ca: certs.ca.cert, requestCert: true, rejectUnauthorized: true },
    );

  it('probes-over-https-with-the-client-certificate-and-closes-the-connection', async () => {
    let client = '';
    const server = await serve(
      (req, res) => {
        client = String((req.socket as TLSSocket).getPeerCertificate().subject.CN);
        res.end('ok');
      },
      { cert: certs.server.cert, key: certs.server.key, ca: certs.ca.cert, requestCert: true, rejectUnauthorized: true },
    );
    try {
      const result = await new HttpCheck(spec(), clientTls).run(target(server.port), signal());
      assert.deepEqual(result, { status: 'passing', output: 'HTTP 200' });
      assert.equal(client, 'berth-test-client');
      const socket = server.sockets[0];
      assert.ok(socket);
      await closed(socket);
    } finally {
      await server.close();
    }
  });

  it('is-critical-without-the-client-certificate-the-instance-requires', async () => {
    const server = await mutualTls();
    try {
      const result = await new HttpCheck(spec(), { ca: certs.ca.cert, rejectUnauthorized: true }).run(target(server.port), signal());
      assert.equal(result.status, 'critical');
    } finally {
      await server.close();
    }
  });

  it('is-critical-when-the-instance-certificate-is-not-trusted', async () => {
    const server = await serve((_req, res) => res.end('ok'), { cert: certs.other.cert, key: certs.other.key });
    try {
      const result = await new HttpCheck(spec(), clientTls).run(target(server.port), signal());
      assert.deepEqual(result, { status: 'critical', output: 'unable to verify the first certificate' });
      // The same instance passes once verification is off: the failure above was the certificate's.
      const lax = await new HttpCheck(spec(), { rejectUnauthorized: false }).run(target(server.port), signal());
      assert.deepEqual(lax, { status: 'passing', output: 'HTTP 200' });
    } finally {
      await server.close();
    }
  });

  it('is-critical-when-probing-plain-http-with-tls-settings', async () => {
    const server = await serve((_req, res) => res.end('ok'));
    try {
      const result = await new HttpCheck(spec(), clientTls).run(target(server.port), signal());
      assert.equal(result.status, 'critical');
    } finally {
      await server.close();
    }
  });

  it('create-check-passes-the-tls-settings-on-and-checks-run-again-after-close', async () => {
    const server = await mutualTls();
    try {
      const check = createCheck(spec(), clientTls);
      assert.ok(check);
      assert.deepEqual(await check.run(target(server.port), signal()), { status: 'passing', output: 'HTTP 200' });
      await closeHttpChecks();
      assert.deepEqual(await check.run(target(server.port), signal()), { status: 'passing', output: 'HTTP 200' });
    } finally {
      await server.close();
    }
  });
});
