import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { request, WebSocket } from 'undici';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    # The 50 MiB upload: above the default 10 MiB limit.
    maxBody: 64MiB
    services:
      web:
        command: node web.mjs
        replicas: 2
        health: { http: /health, interval: 200ms, timeout: 150ms }
        timeout: 500ms
        stable: "1.0.0"
        versions:
          "1.0.0": {}
          "2.0.0": { replicas: 1 }
      odd:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms }
      sick:
        command: node web.mjs
        health: { command: "exit 2", interval: 200ms, timeout: 150ms }
  side:
    endpoint: { port: 0 }
    services:
      echo:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms }
`);

const MiB = 1024 * 1024;

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; json: Record<string, unknown> }> {
  const res = await request(url, { headers });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(text) as Record<string, unknown> };
}

/** Sends `text` on a fresh connection and resolves with everything read until the server closes it. */
async function rawRequest(base: string, text: string): Promise<string> {
  const { connect } = await import('node:net');
  const url = new URL(base);
  return new Promise<string>((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => socket.write(text));
    let data = '';
    socket.on('data', (d: Buffer) => (data += d.toString()));
    socket.on('error', reject);
    socket.on('close', () => resolve(data));
  });
}

async function rss(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

describe('the gateway', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gw: string;

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 5);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('routes /<group>/<service>/<rest> to a passing instance of the stable version as /<rest>', async () => {
    const res = await get(`${gw}/core/web/echo?x=1`);
    assert.equal(res.status, 200);
    assert.equal(res.json.url, '/echo?x=1');
    assert.match(String(res.json.instance), /^web-1\.0\.0-/);
    const headers = res.json.headers as Record<string, string>;
    assert.equal(headers['x-forwarded-prefix'], '/core/web');
    assert.equal(headers['x-forwarded-proto'], 'http');
    assert.equal(headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(headers['x-forwarded-host'], new URL(gw).host);
  });

  it('balances over the stable version\'s instances', async () => {
    // peak-EWMA (the default) sends a lone request to the fastest instance; concurrent ones spread.
    const answers = await Promise.all(Array.from({ length: 40 }, () => get(`${gw}/core/web/echo`)));
    const seen = new Set(answers.map((a) => String(a.json.instance)));
    assert.equal(seen.size, 2);
    assert.ok([...seen].every((id) => id.startsWith('web-1.0.0-')), [...seen].join());
  });

  it('reaches v2 by /v2/ path and by Accept-Version', async () => {
    const byPath = await get(`${gw}/core/web/v2/echo`);
    assert.match(String(byPath.json.instance), /^web-2\.0\.0-/);
    assert.equal(byPath.json.url, '/echo');
    assert.equal((byPath.json.headers as Record<string, string>)['x-forwarded-prefix'], '/core/web/v2');
    const byHeader = await get(`${gw}/core/web/echo`, { 'accept-version': '^2' });
    assert.match(String(byHeader.json.instance), /^web-2\.0\.0-/);
    const bad = await get(`${gw}/core/web/echo`, { 'accept-version': 'latest please' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, 'BERTH_ERR_BAD_VERSION');
  });

  it('creates an x-request-id, keeps a given one, on both the instance and the response', async () => {
    const fresh = await get(`${gw}/core/web/echo`);
    const id = fresh.headers['x-request-id'];
    assert.match(String(id), /^[0-9a-f-]{36}$/);
    assert.equal((fresh.json.headers as Record<string, string>)['x-request-id'], id);
    const kept = await get(`${gw}/core/web/echo`, { 'x-request-id': 'abc-123' });
    assert.equal(kept.headers['x-request-id'], 'abc-123');
    assert.equal((kept.json.headers as Record<string, string>)['x-request-id'], 'abc-123');
    const line = await node.waitForLog((l) => l.event === 'access' && l.requestId === 'abc-123');
    assert.equal(line.service, 'web');
    assert.equal(line.status, 200);
    assert.match(String(line.instance), /^web-1\.0\.0-/);
  });

  it('does not forward hop-by-hop headers, nor those the Connection header names', async () => {
    // A raw request: HTTP clients rewrite Connection headers themselves.
    const reply = await rawRequest(gw, 'GET /core/web/echo HTTP/1.1\r\nHost: x\r\nConnection: close, x-hop\r\nX-Hop: secret\r\nX-End: kept\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n\r\n');
    const headers = (JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> }).headers;
    assert.equal(headers['x-hop'], undefined);
    assert.equal(headers.te, undefined);
    assert.equal(headers['keep-alive'], undefined);
    assert.equal(headers['x-end'], 'kept');
  });

  it('answers its own errors as JSON with a stable code and the request id', async () => {
    const none = await get(`${gw}/nowhere/at/all`);
    assert.equal(none.status, 404);
    assert.equal(none.json.code, 'BERTH_ERR_NO_ROUTE');
    assert.equal(none.json.requestId, none.headers['x-request-id']);
    const sick = await get(`${gw}/core/sick/x`);
    assert.equal(sick.status, 503);
    assert.equal(sick.json.code, 'BERTH_ERR_NO_INSTANCE');
    assert.equal(sick.headers['retry-after'], '1');
    const slow = await get(`${gw}/core/web/slow?ms=3000`);
    assert.equal(slow.status, 504);
    assert.equal(slow.json.code, 'BERTH_ERR_UPSTREAM_TIMEOUT');
    assert.ok(!JSON.stringify(slow.json).includes('    at '), 'no stack trace');
  });

  it('answers 400 to malformed HTTP and keeps serving', async () => {
    const reply = await rawRequest(gw, 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n');
    assert.match(reply, /^HTTP\/1\.1 400/);
    assert.equal((await get(`${gw}/core/web/echo`)).status, 200);
  });

  it('answers 502 to a malformed response from an instance, cuts one malformed past its head, never reuses the connection, and keeps serving', async () => {
    // A service of its own: the instance that sends these is rightly counted as failing (breaker, outlier detection).
    const echoed = async (): Promise<void> => {
      const res = await get(`${gw}/core/odd/echo`);
      assert.equal(res.status, 200);
      assert.equal((res.json as { url?: string }).url, '/echo', 'a real answer, never a stray one');
    };
    for (const kind of ['conflicting-length', 'bare-lf', 'te-and-length', 'obs-fold']) {
      const res = await request(`${gw}/core/odd/malformed?kind=${kind}`);
      const body = (await res.body.json()) as Record<string, unknown>;
      assert.equal(res.statusCode, 502, kind);
      assert.equal(body.code, 'BERTH_ERR_UPSTREAM_RESET', kind);
      assert.match(String(body.message), /the instance sent an invalid response/, kind);
      await echoed();
    }
    // The head was valid and the response had begun: the only honest signal left is to cut it.
    await assert.rejects(async () => (await request(`${gw}/core/odd/malformed?kind=bad-chunk`)).body.text());
    await echoed();
    // The first response is whole and goes to the client; the bytes after it close the connection.
    const stray = await request(`${gw}/core/odd/malformed?kind=stray-bytes`);
    assert.equal(stray.statusCode, 200);
    assert.equal(await stray.body.text(), 'ok');
    for (let i = 0; i < 10; i++) await echoed();
  });

  it('serves a group on its own port', async () => {
    const line = await node.waitForLog((l) => l.event === 'gateway.listening' && l.group === 'side');
    const res = await get(`${String(line.url)}/echo/echo`);
    assert.equal(res.status, 200);
    assert.equal(res.json.url, '/echo');
    assert.match(String(res.json.instance), /^echo-/);
  });

  it('proxies a WebSocket upgrade both ways', async () => {
    const ws = new WebSocket(`${gw.replace('http', 'ws')}/core/web/ws`);
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => ws.send('hello'));
      ws.addEventListener('message', (e) => {
        messages.push(String(e.data));
        ws.close();
      });
      ws.addEventListener('close', () => resolve());
      ws.addEventListener('error', () => reject(new Error('websocket error')));
    });
    assert.deepEqual(messages, ['echo: hello']);
  });

  it('streams a 50 MiB upload and a 50 MiB download while its RSS grows by less than 30 MiB', async (t) => {
    const pid = node.child.pid!;
    // A first, smaller round warms the code paths and the allocator's free lists
    // (a one-off plateau of ~20 MiB in any Node process that moves buffers); what
    // is measured is what the 50 MiB transfers add on top. Buffering would add 50.
    await upload(8 * MiB);
    await download(8 * MiB);
    // Reset the peak-RSS mark, so VmHWM afterwards is the peak during the transfers.
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    const before = await rss(pid);
    assert.equal(await upload(50 * MiB), 50 * MiB);
    assert.equal(await download(50 * MiB), 50 * MiB);
    const peak = (await rss(pid)).hwm;
    const growth = (peak - before.rss) / MiB;
    t.diagnostic(`gateway RSS ${(before.rss / MiB).toFixed(1)} MiB before, peak ${(peak / MiB).toFixed(1)} MiB during the transfers`);
    assert.ok(growth < 30, `gateway RSS grew by ${growth.toFixed(1)} MiB`);
    const logged = await node.waitForLog((l) => l.event === 'access' && l.path === '/core/web/upload' && l.bytesIn === 50 * MiB);
    assert.equal(logged.status, 200);
  });

  async function upload(bytes: number): Promise<number> {
    let sent = 0;
    const chunk = Buffer.alloc(256 * 1024, 'y');
    const body = Readable.from((function* () {
      while (sent < bytes) {
        sent += chunk.length;
        yield chunk;
      }
    })());
    const res = await request(`${gw}/core/web/upload`, { method: 'POST', body, headers: { 'content-length': String(bytes) } });
    return ((await res.body.json()) as { bytes: number }).bytes;
  }

  async function download(bytes: number): Promise<number> {
    const res = await request(`${gw}/core/web/download?bytes=${bytes}`);
    let received = 0;
    for await (const piece of res.body) received += (piece as Buffer).length;
    return received;
  }
});
