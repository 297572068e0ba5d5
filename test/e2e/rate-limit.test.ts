// Rate limits and connection caps at the edge, measured on a real node: an
// open-loop client at twice a route's rate is admitted at the rate (within
// 5 %), a client cannot pick its bucket with X-Forwarded-For unless it comes
// through a trusted proxy, and a client address past its connection cap is
// closed on arrival while another address is served.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { Client, Pool, request } from 'undici';
import { BerthProcess, makeProject } from '../support/node-process.js';

/** The paced route's limit: tokens a second, and the bucket's size. */
const RATE = 50;
const BURST = 20;
/**
 * Long enough that the bucket's whole-token steps (±1 token) and the first
 * and last requests' latencies (a few ms each) are well under 1 % of what it
 * admits (~200 tokens). The burst is the slack for a stall of the shared
 * machine: tokens are lost only when nothing arrives for longer than
 * BURST / RATE (400 ms), for the bucket is then full.
 */
const LOAD_MS = 4_000;
const PER_IP = 5;

const manifest = (trustedProxies: string[]): string => `admin: { listen: "127.0.0.1:0" }
gateway: { listen: "127.0.0.1:0", trustedProxies: [${trustedProxies.join(', ')}], connections: { perIp: ${PER_IP} } }
dataDir: data
groups:
  core:
    services:
      web:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms }
        routes:
          - { path: /paced, rateLimit: { perIp: { rate: ${RATE}/s, burst: ${BURST} } } }
          # One token a minute: refills nothing while the test runs, so each count is exact.
          - { path: /keyed, rateLimit: { perIp: { rate: 1/m, burst: 3 } } }
`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * Sends GET `path` `perSecond` times a second for `durationMs`, open loop:
 * each request leaves when its time comes, answered or not the ones before it
 * (a timer that fires late sends every request that is due at once). From
 * `localAddress`, over `connections` kept-alive connections opened first.
 */
async function pacedLoad(origin: string, path: string, options: { perSecond: number; durationMs: number; localAddress: string; connections: number }): Promise<{ answers: Answer[]; elapsedMs: number }> {
  const pool = new Pool(origin, { connections: options.connections, localAddress: options.localAddress });
  try {
    // Open the connections before the clock starts: a handshake would delay the first requests.
    await Promise.all(Array.from({ length: options.connections }, () => pool.request({ path: '/core/web/warm', method: 'GET' }).then((res) => res.body.dump())));
    const interval = 1000 / options.perSecond;
    const total = Math.round(options.durationMs / interval);
    const pending: Promise<Answer>[] = [];
    let first = 0;
    let last = 0;
    await new Promise<void>((resolve) => {
      const t0 = performance.now();
      const tick = (): void => {
        while (pending.length < total && t0 + pending.length * interval <= performance.now()) {
          last = performance.now();
          if (pending.length === 0) first = last;
          pending.push(
            pool.request({ path, method: 'GET' }).then(
              async (res) => ({ status: res.statusCode, headers: res.headers, body: await res.body.text() }),
              (err: Error) => ({ status: 0, headers: {}, body: err.message }),
            ),
          );
        }
        if (pending.length >= total) resolve();
        else setTimeout(tick, Math.max(0, t0 + pending.length * interval - performance.now()));
      };
      tick();
    });
    return { answers: await Promise.all(pending), elapsedMs: last - first };
  } finally {
    await pool.close();
  }
}

/** Sequential GETs on one connection from `localAddress`, each with the headers given. */
async function sequence(origin: string, path: string, localAddress: string, headers: Record<string, string>[]): Promise<Answer[]> {
  const client = new Client(origin, { localAddress });
  try {
    const answers: Answer[] = [];
    for (const h of headers) {
      const res = await client.request({ path, method: 'GET', headers: h });
      answers.push({ status: res.statusCode, headers: res.headers, body: await res.body.text() });
    }
    return answers;
  } finally {
    await client.close();
  }
}

/** A connection from `localAddress` that has been served one request (so the gateway has counted it), kept open. */
function servedConnection(gateway: URL, localAddress: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: Number(gateway.port), host: gateway.hostname, localAddress }, () => socket.write(`GET /core/web/held HTTP/1.1\r\nHost: ${gateway.host}\r\n\r\n`));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      data += d;
      const head = data.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(data.slice(0, head));
      if (head !== -1 && length && data.length - head - 4 >= Number(length[1])) {
        socket.removeAllListeners('error');
        socket.on('error', () => undefined);
        resolve(socket);
      }
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`connection from ${localAddress} closed before it was served: ${JSON.stringify(data)}`)));
  });
}

/** Connects from `localAddress`, sends a GET, and reports what came back before the connection closed and how long that took. */
function attempt(gateway: URL, localAddress: string): Promise<{ data: string; closedAfterMs: number; error?: string }> {
  return new Promise((resolve) => {
    const started = performance.now();
    let data = '';
    let error: string | undefined;
    const socket = connect({ port: Number(gateway.port), host: gateway.hostname, localAddress }, () =>
      socket.write(`GET /core/web/attempt HTTP/1.1\r\nHost: ${gateway.host}\r\nConnection: close\r\n\r\n`),
    );
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (data += d));
    // A write racing the gateway's close may be answered by a reset: that is the refusal too.
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => resolve({ data, closedAfterMs: performance.now() - started, ...(error === undefined ? {} : { error }) }));
  });
}

const header = (a: Answer, name: string): string => String(a.headers[name] ?? '');

describe('rate limits and connection caps at the edge', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gateway: URL;

  before(async () => {
    project = await makeProject(manifest([]));
    node = await BerthProcess.start(project.file);
    gateway = new URL(String((await node.waitForLog((l) => l.event === 'node.ready')).gateway));
    await node.waitForInstances((xs) => xs.some((r) => r.status === 'passing'));
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('admits an open-loop client at twice the limit at the limit, within 5 %', async (t) => {
    const { answers, elapsedMs } = await pacedLoad(gateway.origin, '/core/web/paced', { perSecond: 2 * RATE, durationMs: LOAD_MS, localAddress: '127.0.0.3', connections: 4 });
    const ok = answers.filter((a) => a.status === 200).length;
    const limited = answers.filter((a) => a.status === 429);
    assert.deepEqual(answers.filter((a) => a.status !== 200 && a.status !== 429).map((a) => `${a.status} ${a.body.slice(0, 120)}`), [], 'every answer is 200 or 429');
    // The bucket starts full: BURST at once, then RATE a second over the time between the first request and the last.
    const admitted = (ok - BURST) / (elapsedMs / 1000);
    t.diagnostic(`${answers.length} requests in ${elapsedMs.toFixed(0)} ms (${(answers.length / (elapsedMs / 1000)).toFixed(1)}/s offered): ${ok} × 200, ${limited.length} × 429; admitted ${admitted.toFixed(2)}/s against ${RATE}/s (${(((admitted - RATE) / RATE) * 100).toFixed(2)} %)`);
    assert.ok(Math.abs(admitted - RATE) <= 0.05 * RATE, `admitted ${admitted.toFixed(2)}/s, limit ${RATE}/s`);
    assert.ok(limited.length >= answers.length / 3, `only ${limited.length} of ${answers.length} were refused at twice the rate`);
    // What every refusal tells the client: come back in a second (a token takes 20 ms), the burst, and the policy.
    for (const a of limited) {
      assert.equal(header(a, 'retry-after'), '1');
      assert.equal(header(a, 'ratelimit-limit'), String(BURST));
      assert.equal(header(a, 'ratelimit-remaining'), '0');
      assert.equal(header(a, 'ratelimit-reset'), '1');
      assert.equal(header(a, 'ratelimit-policy'), `${BURST};w=1`);
      assert.equal((JSON.parse(a.body) as { code: string }).code, 'BERTH_ERR_RATE_LIMITED');
    }
  });

  it('keys an untrusted peer by its address, whatever X-Forwarded-For it sends', async () => {
    // Eight made-up clients from one peer: one bucket of three.
    const spoofed = await sequence(gateway.origin, '/core/web/keyed', '127.0.0.4', Array.from({ length: 8 }, (_, i) => ({ 'x-forwarded-for': `198.51.100.${i + 1}` })));
    assert.deepEqual(spoofed.map((a) => a.status), [200, 200, 200, 429, 429, 429, 429, 429]);
    const refused = spoofed[3]!;
    const retryAfter = Number(header(refused, 'retry-after'));
    // One token a minute: the next one is at most a minute away.
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${retryAfter}`);
    assert.equal(header(refused, 'ratelimit-reset'), String(retryAfter));
    assert.equal(header(refused, 'ratelimit-limit'), '3');
    assert.equal(header(refused, 'ratelimit-remaining'), '0');
    assert.equal(header(refused, 'ratelimit-policy'), '3;w=180');
    // Another peer address has a bucket of its own: the key is the peer, not one bucket for everyone.
    const other = await sequence(gateway.origin, '/core/web/keyed', '127.0.0.5', [{ 'x-forwarded-for': '198.51.100.1' }]);
    assert.deepEqual(other.map((a) => a.status), [200]);
  });

  it(`closes a connection past gateway.connections.perIp (${PER_IP}) at once, serves another address, and counts it`, async () => {
    const held: Socket[] = [];
    try {
      for (let i = 0; i < PER_IP; i++) held.push(await servedConnection(gateway, '127.0.0.1'));
      const refused = await attempt(gateway, '127.0.0.1');
      assert.equal(refused.data, '', 'no answer on the refused connection');
      assert.ok(refused.closedAfterMs < 2_000, `closed after ${refused.closedAfterMs.toFixed(0)} ms`);
      const other = await attempt(gateway, '127.0.0.2');
      assert.match(other.data, /^HTTP\/1\.1 200 /);

      const res = await request(`${node.admin}/metrics`, { headers: node.auth() });
      const metrics = await res.body.text();
      assert.equal(res.statusCode, 200);
      assert.match(metrics, /^berth_gateway_connections_refused_total\{reason="per-ip"\} 1$/m);
    } finally {
      for (const socket of held) socket.destroy();
    }
  });

  it('keys each client behind a trusted proxy by X-Forwarded-For (after a reload that trusts 127.0.0.1)', async () => {
    await writeFile(project.file, manifest(['127.0.0.1']));
    const reloaded = await node.call('POST', '/v1/reload');
    assert.equal(reloaded.status, 200, JSON.stringify(reloaded.body));
    // The same route as above, and the same peer for both clients: only X-Forwarded-For tells them apart now.
    const a = { 'x-forwarded-for': '203.0.113.1' };
    const b = { 'x-forwarded-for': '203.0.113.9, 203.0.113.2' };
    const answers = await sequence(gateway.origin, '/core/web/keyed', '127.0.0.1', [a, b, a, b, a, b, a, b]);
    assert.deepEqual(answers.map((x) => x.status), [200, 200, 200, 200, 200, 200, 429, 429]);
  });
});
