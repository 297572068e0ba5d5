import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { PassThrough, Readable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { useCerts } from '../../../test/support/certs.js';
import { ResponseParseError, UpstreamClient, UpstreamClosed, type UpstreamClientOptions, type UpstreamController, type UpstreamHandler, type UpstreamRequest } from './client.js';
import { closedPort } from '../../../test/support/ports.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// --- Waiting on events, never on time -------------------------------------

/** Counts events; a test waits until there have been `n`. */
class Counter {
  count = 0;
  #waiters: Array<{ n: number; resolve: () => void }> = [];

  bump(): void {
    this.count++;
    this.#waiters = this.#waiters.filter((w) => {
      if (this.count < w.n) return true;
      w.resolve();
      return false;
    });
  }

  reach(n: number): Promise<void> {
    if (this.count >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }
}

/** Turns of the event loop until `cond` holds (for state only the client's own socket events change). */
async function until(cond: () => boolean, what: string): Promise<void> {
  const bound = performance.now() + 5_000;
  while (!cond()) {
    if (performance.now() > bound) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

// --- Instances --------------------------------------------------------------

/** A listening instance: its origin and the connections it accepted (server side), in order. */
interface Instance {
  origin: string;
  port: number;
  sockets: Socket[];
  accepted: Counter;
  /** Resolves when the i-th accepted connection has closed. */
  closed(i: number): Promise<void>;
}

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  socket: Socket;
  res: http.ServerResponse;
}

interface HttpInstance extends Instance {
  /** Requests as they arrived. */
  requests: Seen[];
  arrived: Counter;
  server: http.Server | https.Server;
}

async function listen(t: TestContext, server: net.Server, scheme: 'http' | 'https', onSocket?: (socket: Socket, index: number) => void): Promise<Instance> {
  const closes: Array<Promise<void>> = [];
  const inst: Instance = { origin: '', port: 0, sockets: [], accepted: new Counter(), closed: (i) => closes[i] ?? Promise.reject(new Error(`no connection ${i}`)) };
  server.on('connection', (socket: Socket) => {
    closes.push(new Promise((resolve) => socket.once('close', () => resolve())));
    inst.sockets.push(socket);
    onSocket?.(socket, inst.sockets.length - 1);
    inst.accepted.bump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  inst.port = (server.address() as AddressInfo).port;
  inst.origin = `${scheme}://127.0.0.1:${inst.port}`;
  t.after(async () => {
    for (const socket of inst.sockets) socket.destroy();
    server.close();
    await once(server, 'close');
  });
  return inst;
}

type Handle = (req: http.IncomingMessage, res: http.ServerResponse) => unknown;

/** A node:http (or https) instance answering with `handle`. */
async function httpInstance(t: TestContext, handle: Handle, server: http.Server | https.Server = http.createServer()): Promise<HttpInstance> {
  const requests: Seen[] = [];
  const arrived = new Counter();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, socket: req.socket, res });
    arrived.bump();
    Promise.resolve(handle(req, res)).catch((err: unknown) => {
      res.destroy(err as Error);
    });
  });
  const inst = await listen(t, server, server instanceof https.Server ? 'https' : 'http');
  return Object.assign(inst, { requests, arrived, server });
}

/** A raw TCP instance, for answers node:http would never give. */
function rawInstance(t: TestContext, onSocket: (socket: Socket, index: number) => void): Promise<Instance> {
  return listen(t, net.createServer(), 'http', (socket, index) => {
    // A reset from the client must not be an uncaught error here.
    socket.on('error', () => undefined);
    onSocket(socket, index);
  });
}

/** Calls `answer` for each request head the socket receives (requests without bodies). */
function onHeads(socket: Socket, answer: (head: string, index: number) => void): void {
  let buffered = '';
  let index = 0;
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('latin1');
    for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
      const head = buffered.slice(0, end);
      buffered = buffered.slice(end + 4);
      answer(head, index++);
    }
  });
}

const OK = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// --- The client and a handler that collects --------------------------------

function newClient(t: TestContext, options: Partial<UpstreamClientOptions> = {}): UpstreamClient {
  const client = new UpstreamClient({ connections: 4, keepAliveTimeoutMs: 10_000, keepAliveMaxTimeoutMs: 60_000, connectTimeoutMs: 5_000, ...options });
  t.after(() => client.destroy());
  return client;
}

interface Outcome {
  status: number;
  headers: string[];
  body: Buffer;
  error: Error | null;
  /** The handler's calls in order (consecutive data folded into one), `late …` for any after the end. */
  calls: string[];
}

interface Hooks {
  onStart?(controller: UpstreamController): void;
  onHead?(controller: UpstreamController, status: number, headers: string[]): void;
  onData?(controller: UpstreamController, chunk: Buffer): void;
}

class Exchange implements UpstreamHandler {
  readonly calls: string[] = [];
  readonly chunks: Buffer[] = [];
  received = 0;
  controller: UpstreamController | undefined;
  settled = false;
  readonly done: Promise<Outcome>;
  readonly #hooks: Hooks;
  #status = 0;
  #headers: string[] = [];
  #settle: (outcome: Outcome) => void = () => undefined;

  constructor(hooks: Hooks) {
    this.#hooks = hooks;
    this.done = new Promise((resolve) => {
      this.#settle = resolve;
    });
  }

  #record(name: string): void {
    if (this.settled) this.calls.push(`late ${name}`);
    else if (name !== 'data' || this.calls.at(-1) !== 'data') this.calls.push(name);
  }

  onRequestStart(controller: UpstreamController): void {
    this.#record('start');
    this.controller = controller;
    this.#hooks.onStart?.(controller);
  }

  onResponseStart(controller: UpstreamController, status: number, headers: string[]): void {
    this.#record('head');
    this.#status = status;
    this.#headers = headers;
    this.#hooks.onHead?.(controller, status, headers);
  }

  onResponseData(controller: UpstreamController, chunk: Buffer): void {
    this.#record('data');
    this.chunks.push(chunk);
    this.received += chunk.length;
    this.#hooks.onData?.(controller, chunk);
  }

  onResponseEnd(): void {
    this.#record('end');
    this.#finish(null);
  }

  onResponseError(_controller: UpstreamController, err: Error): void {
    this.#record('error');
    this.#finish(err);
  }

  #finish(error: Error | null): void {
    if (this.settled) return;
    this.settled = true;
    this.#settle({ status: this.#status, headers: this.#headers, body: Buffer.concat(this.chunks), error, calls: this.calls });
  }
}

type Request = Partial<UpstreamRequest> & { origin: string };

function send(client: UpstreamClient, request: Request, hooks: Hooks = {}): Exchange {
  const exchange = new Exchange(hooks);
  client.dispatch({ path: '/', method: 'GET', headers: [], body: null, ...request }, exchange);
  return exchange;
}

/** Sends and expects a complete response: its body as text. */
async function fetchText(client: UpstreamClient, request: Request): Promise<string> {
  const out = await send(client, request).done;
  assert.equal(out.error, null, `${request.path ?? '/'} failed: ${String(out.error)}`);
  assert.deepEqual(out.calls.filter((c) => c !== 'data'), ['start', 'head', 'end']);
  return out.body.toString();
}

/** Every value of the field `name` in a flat [name, value, …] list. */
function field(headers: readonly string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) values.push(headers[i + 1]!);
  return values;
}

const codeOf = (err: Error | null): unknown => (err !== null && 'code' in err ? err.code : undefined);

describe('UpstreamClient', { timeout: 10_000 }, () => {
  describe('requests and responses', () => {
    it('sends-a-get-and-hands-on-the-status-lower-case-headers-and-body', async (t) => {
      const inst = await httpInstance(t, (_req, res) => {
        res.setHeader('X-Custom', 'Yes');
        res.setHeader('Set-Cookie', ['a=1', 'b=2']);
        res.writeHead(201, { 'Content-Type': 'text/plain', 'Content-Length': '5' });
        res.end('hello');
      });
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin, path: '/a/b?c=d', headers: ['X-Req', 'one', 'accept', '*/*'] }).done;
      assert.equal(out.error, null);
      assert.equal(out.status, 201);
      assert.equal(out.body.toString(), 'hello');
      assert.deepEqual(out.calls, ['start', 'head', 'data', 'end']);
      assert.deepEqual(field(out.headers, 'x-custom'), ['Yes']);
      assert.deepEqual(field(out.headers, 'set-cookie'), ['a=1', 'b=2']);
      assert.deepEqual(field(out.headers, 'content-type'), ['text/plain']);
      assert.deepEqual(field(out.headers, 'content-length'), ['5']);
      for (let i = 0; i < out.headers.length; i += 2) assert.equal(out.headers[i], out.headers[i]!.toLowerCase());
      // node:http sends Connection and Keep-Alive: connection-level, not handed on.
      assert.deepEqual(field(out.headers, 'connection'), []);
      assert.deepEqual(field(out.headers, 'keep-alive'), []);

      const seen = inst.requests[0]!;
      assert.equal(seen.method, 'GET');
      assert.equal(seen.url, '/a/b?c=d');
      assert.equal(seen.headers.host, `127.0.0.1:${inst.port}`);
      assert.equal(seen.headers['x-req'], 'one');
      assert.equal(seen.headers.accept, '*/*');
      assert.equal(seen.headers['transfer-encoding'], undefined);
      assert.equal(seen.headers['content-length'], undefined);
    });

    it('keeps-the-host-field-the-request-has', async (t) => {
      const inst = await httpInstance(t, (_req, res) => res.end());
      const client = newClient(t);
      await fetchText(client, { origin: inst.origin, headers: ['Host', 'shop.example'] });
      const raw = inst.requests[0]!.rawHeaders;
      assert.deepEqual(raw.filter((_, i) => i % 2 === 0 && raw[i]!.toLowerCase() === 'host'), ['Host']);
      assert.equal(inst.requests[0]!.headers.host, 'shop.example');
    });

    it('skips-informational-responses-from-the-instance', async (t) => {
      const inst = await httpInstance(t, (_req, res) => {
        res.writeContinue();
        res.writeEarlyHints({ link: '</style.css>; rel=preload' });
        res.end('final');
      });
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin }).done;
      assert.equal(out.status, 200);
      assert.equal(out.body.toString(), 'final');
      assert.deepEqual(field(out.headers, 'link'), []);
      assert.deepEqual(out.calls, ['start', 'head', 'data', 'end']);
    });

    it('ends-a-head-response-at-its-head-and-reuses-the-connection', async (t) => {
      const inst = await httpInstance(t, (req, res) => {
        if (req.method === 'HEAD') res.setHeader('content-length', '1000');
        res.end();
      });
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin, method: 'HEAD' }).done;
      assert.equal(out.status, 200);
      assert.deepEqual(field(out.headers, 'content-length'), ['1000']);
      assert.deepEqual(out.calls, ['start', 'head', 'end']);
      assert.equal(await fetchText(client, { origin: inst.origin }), '');
      assert.equal(inst.sockets.length, 1);
    });

    it('refuses-a-request-target-that-is-not-origin-form-without-sending-it', async (t) => {
      const inst = await httpInstance(t, (_req, res) => res.end());
      const client = newClient(t);
      for (const path of ['relative', '', '*', 'http://127.0.0.1/x', '/with space', '/tab\there', '/crlf\r\nX-Injected: 1', '/nul\0', '/del\x7f']) {
        const out = await send(client, { origin: inst.origin, path }).done;
        assert.ok(out.error instanceof TypeError, JSON.stringify(path));
        assert.match(out.error.message, /not a request target/);
        assert.deepEqual(out.calls, ['error']);
      }
      const out = await send(client, { origin: 'not an origin' }).done;
      assert.ok(out.error instanceof TypeError);
      assert.match(out.error.message, /not an origin/);
      assert.equal(inst.sockets.length, 0);
      assert.equal(client.stats().size, 0);
    });
  });

  describe('the pool', () => {
    it('reuses-a-kept-alive-connection-for-sequential-requests', async (t) => {
      const inst = await httpInstance(t, (req, res) => res.end(req.url));
      const client = newClient(t);
      for (const path of ['/1', '/2', '/3']) assert.equal(await fetchText(client, { origin: inst.origin, path }), path);
      assert.equal(inst.sockets.length, 1);
      assert.deepEqual(client.stats().get(inst.origin), { connections: 1, idle: 1, queued: 0 });
    });

    it('does-not-reuse-a-connection-the-instance-answers-with-connection-close', async (t) => {
      const inst = await httpInstance(t, (_req, res) => {
        res.setHeader('Connection', 'close');
        res.end('bye');
      });
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin }).done;
      assert.equal(out.body.toString(), 'bye');
      assert.deepEqual(field(out.headers, 'connection'), []);
      await inst.closed(0);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'bye');
      assert.equal(inst.sockets.length, 2);
    });

    it('queues-requests-beyond-the-connection-limit-and-sends-each-as-a-connection-frees', async (t) => {
      const inst = await httpInstance(t, () => undefined); // answered below
      const client = newClient(t, { connections: 2 });
      const exchanges = ['/1', '/2', '/3', '/4'].map((path) => send(client, { origin: inst.origin, path }));
      // Queued requests hear onRequestStart at once (their controller can abort them).
      assert.deepEqual(exchanges.map((e) => e.calls), [['start'], ['start'], ['start'], ['start']]);
      await inst.arrived.reach(2);
      assert.deepEqual(client.stats().get(inst.origin), { connections: 2, idle: 0, queued: 2 });
      const answer = (i: number): void => void inst.requests[i]!.res.end(inst.requests[i]!.url);
      answer(0);
      await inst.arrived.reach(3);
      assert.equal(inst.requests[2]!.url, '/3', 'the first in line goes first');
      assert.equal(inst.requests[2]!.socket, inst.requests[0]!.socket, 'on the connection that freed');
      assert.deepEqual(client.stats().get(inst.origin), { connections: 2, idle: 0, queued: 1 });
      answer(1);
      await inst.arrived.reach(4);
      assert.equal(inst.requests[3]!.url, '/4');
      answer(2);
      answer(3);
      const outs = await Promise.all(exchanges.map((e) => e.done));
      assert.deepEqual(outs.map((o) => o.body.toString()), ['/1', '/2', '/3', '/4']);
      assert.equal(inst.sockets.length, 2);
      assert.deepEqual(client.stats().get(inst.origin), { connections: 2, idle: 2, queued: 0 });
    });

    it('keeps-a-request-paused-while-it-waited-in-line-paused-once-it-has-a-connection', async (t) => {
      const answered = new Counter();
      const inst = await httpInstance(t, (req, res) => {
        if (req.url === '/first') return; // answered below
        res.on('finish', () => answered.bump());
        res.end(req.url);
      });
      const client = newClient(t, { connections: 1 });
      const first = send(client, { origin: inst.origin, path: '/first' });
      let controller: UpstreamController | undefined;
      const second = send(client, { origin: inst.origin, path: '/second' }, { onStart: (c) => (controller = c) });
      assert.ok(controller);
      controller.pause();
      await inst.arrived.reach(1);
      inst.requests[0]!.res.end('first');
      assert.equal((await first.done).body.toString(), 'first');
      await answered.reach(1);
      // A round trip on another connection, answered after the second: had the second not been paused, it would be read by now.
      assert.equal(await fetchText(newClient(t), { origin: inst.origin, path: '/probe' }), '/probe');
      assert.deepEqual(second.calls, ['start'], 'answered by the instance, not read while paused');
      controller.resume();
      assert.equal((await second.done).body.toString(), '/second');
    });

    it('fails-an-aborted-queued-request-once-and-never-sends-it', async (t) => {
      const inst = await httpInstance(t, (req, res) => {
        if (req.url !== '/a') res.end(req.url);
      });
      const client = newClient(t, { connections: 1 });
      const a = send(client, { origin: inst.origin, path: '/a' });
      await inst.arrived.reach(1);
      const b = send(client, { origin: inst.origin, path: '/b' });
      assert.deepEqual(client.stats().get(inst.origin), { connections: 1, idle: 0, queued: 1 });
      const reason = new Error('the client went away');
      b.controller!.abort(reason);
      b.controller!.abort(new Error('again'));
      const outB = await b.done;
      assert.equal(outB.error, reason);
      assert.deepEqual(client.stats().get(inst.origin), { connections: 1, idle: 0, queued: 0 });
      inst.requests[0]!.res.end('a');
      assert.equal((await a.done).body.toString(), 'a');
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/c' }), '/c');
      assert.deepEqual(inst.requests.map((r) => r.url), ['/a', '/c']);
      assert.deepEqual(outB.calls, ['start', 'error']);
      assert.equal(inst.sockets.length, 1);
    });

    it('opens-a-fresh-connection-after-the-instance-closes-an-idle-one', async (t) => {
      const inst = await httpInstance(t, (req, res) => res.end(req.url));
      const client = newClient(t);
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/1' }), '/1');
      assert.deepEqual(client.stats().get(inst.origin), { connections: 1, idle: 1, queued: 0 });
      inst.server.closeIdleConnections();
      await inst.closed(0);
      // The client hears of it on its own socket: once it has, the origin has no connection left.
      await until(() => !client.stats().has(inst.origin), 'the closed connection to leave the pool');
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/2' }), '/2');
      assert.equal(inst.sockets.length, 2);
    });

    it('closes-an-idle-connection-the-instance-talks-on-out-of-turn', async (t) => {
      const inst = await rawInstance(t, (socket) => onHeads(socket, () => socket.write(OK)));
      const client = newClient(t);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      inst.sockets[0]!.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
      await inst.closed(0);
      await until(() => !client.stats().has(inst.origin), 'the connection to leave the pool');
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      assert.equal(inst.sockets.length, 2);
    });

    it('does-not-reuse-an-idle-connection-past-the-keep-alive-timeout-the-instance-announced', async (t) => {
      let now = 1_000;
      const inst = await rawInstance(t, (socket) => onHeads(socket, () => socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=3, max=100\r\nContent-Length: 2\r\n\r\nok')));
      const client = newClient(t, { now: () => now, keepAliveTimeoutMs: 30_000, keepAliveMaxTimeoutMs: 60_000 });
      // timeout=3: kept 3 s less a 1 s margin, from the response's end.
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      now = 2_999;
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      assert.equal(inst.sockets.length, 1, 'reused within the announced keep-alive');
      now = 4_999;
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      assert.equal(inst.sockets.length, 2, 'a fresh connection once it expired');
      await inst.closed(0);
    });

    it('caps-the-announced-keep-alive-and-keeps-its-own-without-one', async (t) => {
      let now = 0;
      // First connection: timeout=600 (capped at 5 s); then timeout=1 (less than the margin: not kept at all); then none (the client's own 3 s).
      const inst = await rawInstance(t, (socket, n) =>
        onHeads(socket, () => socket.write(`HTTP/1.1 200 OK\r\n${['Keep-Alive: timeout=600\r\n', 'Keep-Alive: timeout=1\r\n', ''][n] ?? ''}Content-Length: 2\r\n\r\nok`)));
      const client = newClient(t, { now: () => now, keepAliveTimeoutMs: 3_000, keepAliveMaxTimeoutMs: 5_000 });
      await fetchText(client, { origin: inst.origin });
      now = 4_999;
      await fetchText(client, { origin: inst.origin });
      assert.equal(inst.sockets.length, 1);
      now = 9_999;
      await fetchText(client, { origin: inst.origin }); // the first expired: the second connection, timeout=1
      assert.equal(inst.sockets.length, 2);
      await inst.closed(1); // closed at once: a keep-alive of 0 after the margin
      await fetchText(client, { origin: inst.origin }); // the third, no hint
      assert.equal(inst.sockets.length, 3);
      now = 9_999 + 2_999;
      await fetchText(client, { origin: inst.origin });
      assert.equal(inst.sockets.length, 3);
      now += 3_000;
      await fetchText(client, { origin: inst.origin });
      assert.equal(inst.sockets.length, 4);
    });
  });

  describe('aborts and backpressure', () => {
    it('closes-the-connection-when-a-request-is-aborted-mid-response', async (t) => {
      const inst = await httpInstance(t, (req, res) => {
        if (req.url !== '/long') return void res.end('fine');
        res.writeHead(200, { 'content-length': String(MiB) });
        res.write(Buffer.alloc(1_000, 1)); // and never the rest
      });
      const client = newClient(t);
      const reason = new Error('enough');
      const out = await send(client, { origin: inst.origin, path: '/long' }, { onData: (controller) => controller.abort(reason) }).done;
      assert.equal(out.error, reason);
      assert.equal(out.status, 200);
      await inst.closed(0);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'fine');
      assert.equal(inst.sockets.length, 2);
      assert.deepEqual(out.calls, ['start', 'head', 'data', 'error']);
    });

    it('holds-back-a-large-response-while-paused-and-delivers-it-complete-and-byte-exact', async (t) => {
      const payload = randomBytes(8 * MiB);
      let paused = false;
      let serverWaiting = false;
      let serverDone = false;
      const inst = await httpInstance(t, async (req, res) => {
        if (req.url !== '/big') return void res.end('small');
        res.writeHead(200, { 'content-length': String(payload.length) });
        for (let off = 0; off < payload.length; off += 64 * KiB) {
          if (!res.write(payload.subarray(off, off + 64 * KiB))) {
            serverWaiting = true;
            await once(res, 'drain');
            serverWaiting = false;
          }
        }
        res.end();
        serverDone = true;
      });
      const client = newClient(t);
      let atPause = -1;
      let chunks = 0;
      const big = send(client, { origin: inst.origin, path: '/big' }, {
        onData: (controller) => {
          chunks++;
          if (atPause < 0) {
            atPause = big.received;
            paused = true;
            controller.pause();
            return;
          }
          // Then paused every few chunks, resumed on the next turn.
          if (chunks % 8 === 0) {
            controller.pause();
            setImmediate(() => controller.resume());
          }
        },
      });
      // Paused, with the instance waiting to write more: it cannot be done, and nothing more comes.
      await until(() => (paused && serverWaiting) || serverDone, 'the instance to wait for the paused client');
      assert.equal(serverDone, false, 'the instance wrote all of it while the client was paused');
      assert.equal(big.received, atPause, 'data came while paused');
      big.controller!.resume();
      const out = await big.done;
      assert.equal(out.error, null);
      assert.equal(out.body.length, payload.length);
      assert.ok(out.body.equals(payload), 'the body differs');

      // Paused when its response ends: the connection is still reused (and reads again).
      const small = await send(client, { origin: inst.origin, path: '/small' }, { onData: (controller) => controller.pause() }).done;
      assert.equal(small.body.toString(), 'small');
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/again' }), 'small');
      assert.equal(inst.sockets.length, 1);
    });

    it('fails-the-request-with-the-handlers-error-when-it-throws', async (t) => {
      const inst = await httpInstance(t, (_req, res) => res.end('body'));
      const client = newClient(t);
      const broken = new Error('handler broke');
      const out = await send(client, { origin: inst.origin }, {
        onHead: () => {
          throw broken;
        },
      }).done;
      assert.equal(out.error, broken);
      assert.deepEqual(out.calls, ['start', 'head', 'error']);
      await inst.closed(0);
      const inData = new Error('broke in data');
      const out2 = await send(client, { origin: inst.origin }, {
        onData: () => {
          throw inData;
        },
      }).done;
      assert.equal(out2.error, inData);
      assert.deepEqual(out2.calls, ['start', 'head', 'data', 'error']);
      await inst.closed(1);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'body');
      assert.equal(inst.sockets.length, 3);
    });
  });

  describe('request bodies', () => {
    /** Answers with what it received: its framing and a digest of the bytes. */
    const echo: Handle = async (req, res) => {
      const body = await readBody(req);
      res.end(JSON.stringify({ te: req.headers['transfer-encoding'] ?? null, cl: req.headers['content-length'] ?? null, length: body.length, sha: sha256(body), text: body.length < 100 ? body.toString() : null }));
    };

    it('streams-a-body-with-its-content-length', async (t) => {
      const inst = await httpInstance(t, echo);
      const client = newClient(t);
      const body = Readable.from([Buffer.from('hello '), Buffer.from('world')]);
      const text = await fetchText(client, { origin: inst.origin, method: 'POST', path: '/up', headers: ['Content-Length', '11'], body });
      assert.deepEqual(JSON.parse(text), { te: null, cl: '11', length: 11, sha: sha256(Buffer.from('hello world')), text: 'hello world' });
      // The connection is kept: the body was sent in full.
      assert.equal((JSON.parse(await fetchText(client, { origin: inst.origin })) as { length: number }).length, 0);
      assert.equal(inst.sockets.length, 1);
    });

    it('sends-a-body-without-content-length-chunked', async (t) => {
      const inst = await httpInstance(t, echo);
      const client = newClient(t);
      // Empty chunks must not end the chunked body early; strings go as UTF-8.
      const body = Readable.from([Buffer.from('abc'), Buffer.alloc(0), 'déf', '', Buffer.from('\r\n0\r\n\r\n')]);
      const text = await fetchText(client, { origin: inst.origin, method: 'PUT', headers: ['content-type', 'text/plain'], body });
      const expected = Buffer.from('abcdéf\r\n0\r\n\r\n');
      assert.deepEqual(JSON.parse(text), { te: 'chunked', cl: null, length: expected.length, sha: sha256(expected), text: expected.toString() });
      assert.equal((JSON.parse(await fetchText(client, { origin: inst.origin })) as { length: number }).length, 0);
      assert.equal(inst.sockets.length, 1);
    });

    it('completes-a-request-whose-body-was-already-read-to-its-end', async (t) => {
      const inst = await httpInstance(t, echo);
      const client = newClient(t);
      const body = Readable.from([]);
      body.resume();
      await once(body, 'end');
      const text = await fetchText(client, { origin: inst.origin, method: 'POST', body });
      assert.deepEqual(JSON.parse(text), { te: 'chunked', cl: null, length: 0, sha: sha256(Buffer.alloc(0)), text: '' });
    });

    it('sends-nothing-of-a-chunked-body-that-fails-in-its-first-read', async (t) => {
      const inst = await httpInstance(t, echo);
      const client = newClient(t);
      // A connection already open: what is written on it goes out at once (on one still connecting, a close would drop it anyway).
      await fetchText(client, { origin: inst.origin, path: '/warm' });
      const body = new PassThrough();
      const tooLarge = new Error('over the limit');
      const out = send(client, { origin: inst.origin, method: 'POST', path: '/refused', body });
      await once(body, 'resume');
      // A first chunk, then the error, in one tick, as BodyLimit does when one read carries a body over maxBody:
      // the chunk is handed on at once, the error a tick later.
      body.write('the part under the limit');
      body.destroy(tooLarge);
      assert.equal((await out.done).error, tooLarge);
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/next' }).then((text) => (JSON.parse(text) as { length: number }).length), 0);
      assert.deepEqual(inst.requests.map((r) => r.url), ['/warm', '/next'], 'the refused request never reached the instance');
    });

    it('streams-a-20-mib-body', async (t) => {
      const inst = await httpInstance(t, async (req, res) => {
        const hash = createHash('sha256');
        let length = 0;
        for await (const chunk of req as AsyncIterable<Buffer>) {
          hash.update(chunk);
          length += chunk.length;
        }
        res.end(JSON.stringify({ length, sha: hash.digest('hex'), te: req.headers['transfer-encoding'] ?? null }));
      });
      const client = newClient(t);
      const data = randomBytes(20 * MiB);
      function* blocks(): Generator<Buffer> {
        for (let off = 0; off < data.length; off += 64 * KiB) yield data.subarray(off, off + 64 * KiB);
      }
      const withLength = await fetchText(client, { origin: inst.origin, method: 'POST', headers: ['content-length', String(data.length)], body: Readable.from(blocks(), { objectMode: false }) });
      assert.deepEqual(JSON.parse(withLength), { length: data.length, sha: sha256(data), te: null });
      const chunked = await fetchText(client, { origin: inst.origin, method: 'POST', body: Readable.from(blocks(), { objectMode: false }) });
      assert.deepEqual(JSON.parse(chunked), { length: data.length, sha: sha256(data), te: 'chunked' });
      assert.equal(inst.sockets.length, 1);
    });

    it('does-not-reuse-a-connection-whose-response-ended-before-its-body-was-sent', async (t) => {
      // Answers each head at once, body or not, and keeps the connection.
      const inst = await rawInstance(t, (socket) => onHeads(socket, () => socket.write(OK)));
      const client = newClient(t);
      const body = new PassThrough();
      body.write('the first part');
      const out = await send(client, { origin: inst.origin, method: 'POST', path: '/upload', headers: ['content-length', '1000'], body }).done;
      assert.equal(out.error, null);
      assert.equal(out.body.toString(), 'ok');
      await inst.closed(0);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      assert.equal(inst.sockets.length, 2);
      body.end('and the rest, which nobody wants');
      assert.deepEqual(out.calls, ['start', 'head', 'data', 'end']);
    });

    it('fails-the-request-when-its-body-errors-or-is-cut-short', async (t) => {
      const inst = await httpInstance(t, (req) => void req.resume()); // never answers
      const client = newClient(t);
      const failing = new PassThrough();
      const a = send(client, { origin: inst.origin, method: 'POST', body: failing });
      failing.write('some');
      await inst.arrived.reach(1);
      const boom = new Error('the source failed');
      failing.destroy(boom);
      const outA = await a.done;
      assert.equal(outA.error, boom);
      assert.deepEqual(outA.calls, ['start', 'error']);

      const cut = new PassThrough();
      const b = send(client, { origin: inst.origin, method: 'POST', headers: ['content-length', '100'], body: cut });
      cut.write('some');
      await inst.arrived.reach(2);
      cut.destroy();
      const outB = await b.done;
      assert.equal(codeOf(outB.error), 'ECONNRESET');
      assert.match(outB.error!.message, /cut short/);
      await Promise.all([inst.closed(0), inst.closed(1)]);
    });
  });

  describe('failures', () => {
    it('fails-with-econnrefused-on-a-closed-port', async (t) => {
      const origin = `http://127.0.0.1:${await closedPort()}`;
      const client = newClient(t);
      const out = await send(client, { origin }).done;
      assert.equal(codeOf(out.error), 'ECONNREFUSED');
      assert.deepEqual(out.calls, ['start', 'error']);
      await until(() => client.stats().size === 0, 'the origin to be forgotten');
    });

    it('fails-with-econnreset-when-the-instance-closes-without-answering', async (t) => {
      const inst = await rawInstance(t, (socket, n) =>
        onHeads(socket, () => {
          if (n === 0) socket.end();
          else socket.destroy();
        }));
      const client = newClient(t);
      for (const how of ['end', 'destroy']) {
        const out = await send(client, { origin: inst.origin }).done;
        assert.equal(codeOf(out.error), 'ECONNRESET', how);
        assert.deepEqual(out.calls, ['start', 'error'], how);
      }
    });

    it('fails-a-response-cut-short-by-the-close-as-a-protocol-error', async (t) => {
      const inst = await rawInstance(t, (socket) => onHeads(socket, () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc')));
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin }).done;
      assert.ok(out.error instanceof ResponseParseError);
      assert.match(out.error.message, /middle of its response/);
      assert.deepEqual(out.calls, ['start', 'head', 'data', 'error']);
    });

    it('ends-a-response-delimited-by-the-close-and-does-not-reuse-its-connection', async (t) => {
      const inst = await rawInstance(t, (socket) => onHeads(socket, () => socket.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end')));
      const client = newClient(t);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'until the end');
      assert.equal(await fetchText(client, { origin: inst.origin }), 'until the end');
      assert.equal(inst.sockets.length, 2);
    });

    it('fails-an-invalid-response-with-response-parse-error-and-does-not-reuse-the-connection', async (t) => {
      const inst = await rawInstance(t, (socket, n) => onHeads(socket, () => socket.write(n === 0 ? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok' : OK)));
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin }).done;
      assert.ok(out.error instanceof ResponseParseError);
      assert.equal(codeOf(out.error), 'BERTH_UPSTREAM_PROTOCOL');
      assert.deepEqual(out.calls, ['start', 'error']);
      await inst.closed(0);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      assert.equal(inst.sockets.length, 2);
    });

    it('does-not-reuse-a-connection-that-sent-bytes-after-its-response', async (t) => {
      const inst = await rawInstance(t, (socket, n) => onHeads(socket, () => socket.write(n === 0 ? `${OK}HTTP/1.1 200 OK\r\n` : OK)));
      const client = newClient(t);
      const out = await send(client, { origin: inst.origin }).done;
      // The response itself was complete: it is handed on, and the connection dropped.
      assert.equal(out.error, null);
      assert.equal(out.body.toString(), 'ok');
      await inst.closed(0);
      assert.equal(await fetchText(client, { origin: inst.origin }), 'ok');
      assert.equal(inst.sockets.length, 2);
      assert.deepEqual(out.calls, ['start', 'head', 'data', 'end']);
    });
  });

  describe('tls', () => {
    const pki = useCerts('berth-http1-client-');

    it('reaches-an-https-origin-with-its-ca-and-fails-with-the-wrong-one', async (t) => {
      const inst = await httpInstance(t, (req, res) => res.end(`tls ${req.url}`), https.createServer({ cert: pki.certs.server.cert, key: pki.certs.server.key }));
      assert.match(inst.origin, /^https:/);
      const good = newClient(t, { tls: { ca: pki.certs.ca.cert, servername: 'localhost', rejectUnauthorized: true } });
      assert.equal(await fetchText(good, { origin: inst.origin, path: '/1' }), 'tls /1');
      assert.equal(await fetchText(good, { origin: inst.origin, path: '/2' }), 'tls /2');
      assert.equal(inst.sockets.length, 1, 'kept alive over TLS');

      const wrongCa = newClient(t, { tls: { ca: pki.certs.otherCa.cert, servername: 'localhost', rejectUnauthorized: true } });
      const out = await send(wrongCa, { origin: inst.origin }).done;
      assert.equal(codeOf(out.error), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      assert.deepEqual(out.calls, ['start', 'error']);

      const wrongName = newClient(t, { tls: { ca: pki.certs.ca.cert, servername: 'elsewhere.example', rejectUnauthorized: true } });
      assert.equal(codeOf((await send(wrongName, { origin: inst.origin }).done).error), 'ERR_TLS_CERT_ALTNAME_INVALID');
      assert.equal(inst.requests.length, 2);
    });
  });

  describe('close and destroy', () => {
    it('close-lets-an-in-flight-request-finish-then-resolves', async (t) => {
      const inst = await httpInstance(t, (req, res) => {
        if (req.url === '/slow') res.write('first,');
        else res.end('quick');
      });
      const client = newClient(t, { connections: 2 });
      const slow = send(client, { origin: inst.origin, path: '/slow' });
      await inst.arrived.reach(1);
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/quick' }), 'quick');
      assert.deepEqual(client.stats().get(inst.origin), { connections: 2, idle: 1, queued: 0 });
      const idleSocket = inst.sockets.indexOf(inst.requests[1]!.socket);

      let closed = false;
      const closing = client.close();
      void closing.then(() => {
        closed = true;
      });
      assert.equal(client.close(), closing);
      const refused = await send(client, { origin: inst.origin, path: '/late' }).done;
      assert.ok(refused.error instanceof UpstreamClosed);
      assert.equal(codeOf(refused.error), 'BERTH_UPSTREAM_CLOSED');
      assert.deepEqual(refused.calls, ['error']);
      // The idle connection goes now, the busy one once its response is done.
      await inst.closed(idleSocket);
      assert.equal(closed, false);
      inst.requests[0]!.res.end('then the rest');
      const out = await slow.done;
      assert.equal(out.error, null);
      assert.equal(out.body.toString(), 'first,then the rest');
      await closing;
      await inst.closed(1 - idleSocket);
      assert.equal(client.stats().size, 0);
      assert.deepEqual(inst.requests.map((r) => r.url), ['/slow', '/quick']);
    });

    it('destroy-fails-requests-in-flight-and-waiting', async (t) => {
      const inst = await httpInstance(t, (_req, res) => {
        res.writeHead(200, { 'content-length': '100' });
        res.write('part');
      });
      const client = newClient(t, { connections: 1 });
      const streaming = deferred();
      const a = send(client, { origin: inst.origin }, { onData: () => streaming.resolve() });
      const b = send(client, { origin: inst.origin });
      await streaming.promise;
      client.destroy();
      const [outA, outB] = await Promise.all([a.done, b.done]);
      for (const out of [outA, outB]) {
        assert.ok(out.error instanceof UpstreamClosed);
        assert.equal(codeOf(out.error), 'BERTH_UPSTREAM_CLOSED');
      }
      assert.deepEqual(outA.calls, ['start', 'head', 'data', 'error']);
      assert.deepEqual(outB.calls, ['start', 'error']);
      assert.ok((await send(client, { origin: inst.origin }).done).error instanceof UpstreamClosed);
      await inst.closed(0);
      assert.equal(client.stats().size, 0);
      assert.equal(inst.requests.length, 1);
    });
  });

  describe('cases found in review', () => {
    it('close-does-not-drop-a-queued-request-when-the-connection-ahead-of-it-closes', async (t) => {
      const inst = await httpInstance(t, (req, res) => {
        if (req.url === '/b') res.end('b');
      });
      const client = newClient(t, { connections: 1 });
      const a = send(client, { origin: inst.origin, path: '/a' });
      await inst.arrived.reach(1);
      const b = send(client, { origin: inst.origin, path: '/b' });
      assert.deepEqual(client.stats().get(inst.origin), { connections: 1, idle: 0, queued: 1 });
      const closing = client.close();
      inst.requests[0]!.res.setHeader('connection', 'close');
      inst.requests[0]!.res.end('a');
      assert.equal((await a.done).error, null);
      await closing;
      assert.ok(b.settled, 'the queued request was dropped: neither answered nor failed');
    });

    it('a-request-aborted-from-on-request-start-does-not-cost-the-next-request-its-connection', async (t) => {
      const inst = await httpInstance(t, (req, res) => res.end(req.url));
      const client = newClient(t, { connections: 1 });
      assert.equal(await fetchText(client, { origin: inst.origin, path: '/warm' }), '/warm');
      const gone = new Error('the client went away');
      const aborted = send(client, { origin: inst.origin, path: '/never' }, { onStart: (controller) => controller.abort(gone) });
      const next = send(client, { origin: inst.origin, path: '/next' }); // in the same turn, as under load
      const [outAborted, outNext] = await Promise.all([aborted.done, next.done]);
      assert.equal(outAborted.error, gone);
      assert.equal(outNext.error, null);
      assert.equal(outNext.body.toString(), '/next');
      assert.deepEqual(inst.requests.map((r) => r.url), ['/warm', '/next']);
    });

    it('forgets-an-origin-given-in-a-form-other-than-its-url-origin', async (t) => {
      const origin = `HTTP://127.0.0.1:${await closedPort()}`;
      const client = newClient(t);
      assert.equal(codeOf((await send(client, { origin }).done).error), 'ECONNREFUSED');
      await until(() => (client.stats().get(origin)?.connections ?? 0) === 0, 'the connection to close');
      assert.equal(client.stats().has(origin), false);
    });
  });
});
