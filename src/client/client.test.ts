import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceRecord } from '../catalog/types.js';
import { isBerthError } from '../errors.js';
import { startAdminNode, type AdminNode } from '../testing/admin-node.js';
import { FakeClock } from '../testing/fake-clock.js';
import { instanceRecord } from '../testing/instance-record.js';
import { createClient, fromRequest, type BerthClient, type ClientOptions, type DiscoveredInstance } from './index.js';
import { closedPort } from '../../test/support/ports.js';

const MANIFEST = `
groups:
  core:
    endpoint: /core
    services:
      web:
        command: node web.js
        stable: "1.0.0"
        versions:
          "1.0.0": {}
          "2.0.0": {}
`;

/** A small instance on port 0: every request it gets, and the next one on demand. */
interface Instance {
  id: string;
  port: number;
  seen: IncomingMessage[];
  next(): Promise<IncomingMessage>;
  close(): Promise<void>;
}

type Handler = (id: string, req: IncomingMessage, res: ServerResponse) => void;

/** Answers what it got: the instance, the path and the headers. */
const echo: Handler = (id, req, res) => {
  const body = JSON.stringify({ instance: id, url: req.url, headers: req.headers });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
};
/** Never answers (a hung instance). */
const hang: Handler = () => undefined;
const status =
  (code: number): Handler =>
  (id, _req, res) =>
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify({ instance: id, status: code }));

async function startInstance(id: string, handler: Handler = echo): Promise<Instance> {
  const seen: IncomingMessage[] = [];
  let waiting: ((req: IncomingMessage) => void)[] = [];
  const server: Server = createServer((req, res) => {
    seen.push(req);
    const waiters = waiting;
    waiting = [];
    for (const w of waiters) w(req);
    handler(id, req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    id,
    port: (server.address() as AddressInfo).port,
    seen,
    next: () => new Promise((resolve) => waiting.push(resolve)),
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

function socketClosed(socket: Socket): Promise<void> {
  return socket.destroyed ? Promise.resolve() : once(socket, 'close').then(() => undefined);
}

interface Harness {
  node: AdminNode;
  clock: FakeClock;
  client: BerthClient;
  /** Puts an instance of web in the catalog (passing unless `fields` say otherwise). */
  register: (id: string, port: number, fields?: Partial<InstanceRecord>) => Promise<void>;
  /** The next list the client's watch reports. */
  nextChange: () => Promise<readonly DiscoveredInstance[]>;
}

/**
 * A real admin API over a real catalog, and a client on a fake clock
 * (deadlines, try timeouts, backoff and breakers move only when told) with a
 * fixed random (the balancer takes the first candidate, backoff is 0).
 */
async function withClient(fn: (h: Harness) => Promise<void>, options: Omit<ClientOptions, 'admin' | 'clock'> = {}): Promise<void> {
  const node = await startAdminNode(MANIFEST);
  const clock = new FakeClock();
  let changes: ((list: readonly DiscoveredInstance[]) => void)[] = [];
  const client = createClient({
    admin: node.url,
    clock,
    random: () => 0,
    ...options,
    onChange: (_service, list) => {
      const waiting = changes;
      changes = [];
      for (const w of waiting) w(list);
    },
  });
  try {
    await fn({
      node,
      clock,
      client,
      register: (id, port, fields = {}) => node.catalog.put(instanceRecord({ id, group: 'core', service: 'web', port, ...fields })),
      nextChange: () => new Promise((resolve) => changes.push(resolve)),
    });
  } finally {
    await client.close();
    await node.close();
  }
}

async function withInstances(instances: Instance[], fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } finally {
    for (const i of instances) await i.close();
  }
}

describe('berth/client: discovery', () => {
  it('follows-the-watch-so-a-new-instance-reaches-the-client-without-a-call', async () => {
    const a = await startInstance('web-a');
    const b = await startInstance('web-b');
    await withInstances([a, b], () =>
      withClient(async ({ node, client, register, nextChange }) => {
        await register('web-a', a.port);
        const first = await client.request('web', '/hello');
        assert.deepEqual([first.status, first.instance], [200, 'web-a']);
        await first.text();
        await node.waiters(1);

        const joined = nextChange();
        await register('web-b', b.port);
        assert.deepEqual((await joined).map((i) => i.id), ['web-a', 'web-b']);
        assert.deepEqual((await client.instances('web')).map((i) => i.id), ['web-a', 'web-b']);

        const left = nextChange();
        await register('web-a', a.port, { status: 'critical' });
        assert.deepEqual((await left).map((i) => i.id), ['web-b']);
        const after = await client.request('web', '/hello');
        assert.equal(after.instance, 'web-b');
        await after.text();
        // Each instance got exactly the calls, never a discovery request: the client does not poll per call.
        assert.deepEqual([a.seen.length, b.seen.length], [1, 1]);
      }),
    );
  });

  it('keeps-the-last-list-while-the-admin-api-is-unreachable', async () => {
    const a = await startInstance('web-a');
    await withInstances([a], () =>
      withClient(async ({ node, clock, client, register }) => {
        await register('web-a', a.port);
        await (await client.request('web', '/')).text();
        await node.waiters(1);
        await node.stopApi();
        // The watch fails against the stopped API and backs off; calls go on with what it knew.
        clock.advance(1_000);
        const res = await client.request('web', '/');
        assert.deepEqual([res.status, res.instance], [200, 'web-a']);
        await res.text();
        clock.advance(60_000);
        assert.deepEqual((await client.instances('web')).map((i) => i.id), ['web-a']);
      }),
    );
  });

  it('close-ends-the-watch-and-refuses-later-calls', async () => {
    const a = await startInstance('web-a');
    await withInstances([a], () =>
      withClient(async ({ node, client, register }) => {
        await register('web-a', a.port);
        await (await client.request('web', '/')).text();
        await node.waiters(1);
        await client.close();
        await node.waiters(0);
        await assert.rejects(client.request('web', '/'), (err) => isBerthError(err, 'BERTH_ERR_CLIENT_CLOSED'));
      }),
    );
  });

  it('names-an-unknown-service-and-one-with-no-passing-instance', () =>
    withClient(async ({ client, register }) => {
      await assert.rejects(client.request('nope', '/'), (err) => isBerthError(err, 'BERTH_ERR_NO_ROUTE') && /nope/.test(err.message));
      await register('web-a', 1, { status: 'critical' });
      await assert.rejects(client.request('web', '/'), (err) => isBerthError(err, 'BERTH_ERR_NO_INSTANCE'));
    }));

  it('goes-to-the-stable-version-unless-asked-for-a-range', async () => {
    const one = await startInstance('web-1');
    const two = await startInstance('web-2');
    await withInstances([one, two], () =>
      withClient(async ({ client, register }) => {
        await register('web-1', one.port);
        await register('web-2', two.port, { version: '2.0.0' });
        const stable = await client.request('web', '/');
        assert.equal(stable.instance, 'web-1');
        await stable.text();
        const v2 = await client.request('web', '/', { version: '^2' });
        assert.equal(v2.instance, 'web-2');
        await v2.text();
        await assert.rejects(client.request('web', '/', { version: 'two' }), (err) => isBerthError(err, 'BERTH_ERR_BAD_VERSION'));
        await assert.rejects(client.request('web', '/', { version: '^3' }), (err) => isBerthError(err, 'BERTH_ERR_NO_INSTANCE'));
      }),
    );
  });
});

describe('berth/client: calls', () => {
  it('retries-a-connect-failure-on-another-instance', async () => {
    const b = await startInstance('web-b');
    await withInstances([b], () =>
      withClient(async ({ client, register }) => {
        await register('web-a', await closedPort());
        await register('web-b', b.port);
        const res = await client.request('web', '/');
        assert.deepEqual([res.status, res.instance, res.retries], [200, 'web-b', 1]);
        await res.text();
      }),
    );
  });

  it('does-not-retry-a-call-with-a-body', () =>
    withClient(async ({ client, register }) => {
      await register('web-a', await closedPort());
      await register('web-b', await closedPort());
      await assert.rejects(client.request('web', '/', { method: 'PUT', body: '{}' }), (err) => isBerthError(err, 'BERTH_ERR_UPSTREAM_CONNECT') && /web-a/.test(err.message));
    }));

  it('never-tries-the-same-instance-twice-and-carries-one-request-id-on-every-try', async () => {
    const instances = await Promise.all(['web-a', 'web-b', 'web-c'].map((id) => startInstance(id, status(503))));
    await withInstances(instances, () =>
      withClient(async ({ client, register }) => {
        for (const i of instances) await register(i.id, i.port);
        const res = await client.request('web', '/', { requestId: 'req-42' });
        // Two retries (the default), one per instance; the third answer is the caller's: no retry is left.
        assert.deepEqual([res.status, res.retries], [503, 2]);
        await res.text();
        assert.deepEqual(instances.map((i) => i.seen.length), [1, 1, 1]);
        assert.deepEqual(instances.map((i) => i.seen[0]?.headers['x-request-id']), ['req-42', 'req-42', 'req-42']);
      }),
    );
  });

  it('opens-an-instance-breaker-and-passes-the-instance-over-until-its-trial', async () => {
    const a = await startInstance('web-a', status(500));
    const b = await startInstance('web-b');
    await withInstances([a, b], () =>
      withClient(async ({ clock, client, register, nextChange }) => {
        await register('web-a', a.port);
        await register('web-b', b.port);
        // 500 is not a retried status: each call is one try, to web-a (the balancer's first pick while costs tie).
        for (let i = 0; i < 5; i++) {
          const res = await client.request('web', '/');
          assert.deepEqual([res.status, res.instance], [500, 'web-a']);
          await res.text();
        }
        const passedOver = await client.request('web', '/');
        assert.deepEqual([passedOver.status, passedOver.instance], [200, 'web-b']);
        await passedOver.text();

        const gone = nextChange();
        await register('web-b', b.port, { status: 'critical' });
        await gone;
        await assert.rejects(client.request('web', '/'), (err) => isBerthError(err, 'BERTH_ERR_CIRCUIT_OPEN'));
        assert.equal(a.seen.length, 5, 'an open breaker keeps calls off the instance');

        clock.advance(5_000);
        const trial = await client.request('web', '/');
        assert.equal(trial.instance, 'web-a');
        await trial.text();
        assert.equal(a.seen.length, 6);
      }),
    );
  });

  it('sends-what-is-left-of-the-deadline-and-cancels-a-timed-out-try-down-to-the-socket', async () => {
    const a = await startInstance('web-a', hang);
    const b = await startInstance('web-b');
    await withInstances([a, b], () =>
      withClient(
        async ({ clock, client, register }) => {
          await register('web-a', a.port);
          await register('web-b', b.port);
          const call = client.request('web', '/echo', { timeoutMs: 3_000 });
          const hung = await a.next();
          assert.equal(hung.headers['x-berth-timeout-ms'], '2000', 'the try timeout, less than the deadline');
          clock.advance(2_000);
          const res = await call;
          const seen = await res.json<{ headers: Record<string, string> }>();
          assert.deepEqual([res.instance, res.retries], ['web-b', 1]);
          assert.equal(seen.headers['x-berth-timeout-ms'], '1000', 'what is left of the 3 s after the first try');
          await socketClosed(hung.socket);
        },
        { policies: { retries: { tryTimeoutMs: 2_000 } } },
      ),
    );
  });

  it('fails-with-upstream-timeout-at-the-deadline', async () => {
    const a = await startInstance('web-a', hang);
    await withInstances([a], () =>
      withClient(
        async ({ clock, client, register }) => {
          await register('web-a', a.port);
          const call = client.request('web', '/', { timeoutMs: 1_000 });
          const hung = await a.next();
          clock.advance(1_000);
          await assert.rejects(call, (err) => isBerthError(err, 'BERTH_ERR_UPSTREAM_TIMEOUT'));
          await socketClosed(hung.socket);
        },
        { policies: { retries: false } },
      ),
    );
  });

  it('aborts-down-to-the-socket-when-the-caller-does', async () => {
    const a = await startInstance('web-a', hang);
    await withInstances([a], () =>
      withClient(async ({ client, register }) => {
        await register('web-a', a.port);
        const controller = new AbortController();
        const call = client.request('web', '/', { signal: controller.signal });
        const hung = await a.next();
        const reason = new Error('the caller gave up');
        controller.abort(reason);
        await assert.rejects(call, (err) => err === reason);
        await socketClosed(hung.socket);
      }),
    );
  });

  it('carries-the-request-id-and-the-shrinking-deadline-of-the-request-being-handled', async () => {
    const b = await startInstance('web-b');
    await withInstances([b], () =>
      withClient(async ({ client, register }) => {
        await register('web-b', b.port);
        // A service handling a request calls web with what is left of that request's deadline.
        const front = createServer((req, res) => {
          client.request('web', '/echo', { ...fromRequest(req) }).then(
            async (answer) => res.end(await answer.text()),
            (err: Error) => res.writeHead(500).end(err.message),
          );
        });
        front.listen(0, '127.0.0.1');
        await once(front, 'listening');
        try {
          const res = await request(`http://127.0.0.1:${(front.address() as AddressInfo).port}/`, { headers: { 'x-request-id': 'chain-1', 'x-berth-timeout-ms': '1500' } });
          const seen = (await res.body.json()) as { headers: Record<string, string> };
          assert.equal(seen.headers['x-request-id'], 'chain-1');
          const left = Number(seen.headers['x-berth-timeout-ms']);
          assert.ok(left > 0 && left <= 1500, `the callee got at most what the caller had left, got ${left}`);

          const fresh = await client.request('web', '/echo');
          const own = await fresh.json<{ headers: Record<string, string> }>();
          assert.match(own.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/, 'a call made on its own gets a new id');
          assert.equal(fresh.requestId, own.headers['x-request-id']);
          assert.equal(own.headers['x-berth-timeout-ms'], '5000', 'the default try timeout');
        } finally {
          front.closeAllConnections();
          front.close();
        }
      }),
    );
  });
});

describe('berth/client: options', () => {
  it('refuses-bad-policies-and-a-bad-admin-url-when-built', () => {
    assert.throws(() => createClient({ admin: 'not a url' }), TypeError);
    assert.throws(() => createClient({ admin: 'http://127.0.0.1:1', policies: { retries: { attempts: -1 } } }), /retries\.attempts/);
    assert.throws(() => createClient({ admin: 'http://127.0.0.1:1', services: { web: { breaker: { instance: { failureRatio: 2 } } } } }), /failureRatio/);
  });
});
