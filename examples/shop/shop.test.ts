// The example services, run for real: each as its own child process on a
// free port, spoken to over HTTP, stopped with SIGTERM.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'undici';
import { startAdminNode } from '../../src/testing/admin-node.js';
import { instanceRecord } from '../../src/testing/instance-record.js';

// This file runs compiled from dist/examples/shop; the services stay in examples/shop.
function shopDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('package root not found');
    dir = parent;
  }
  return join(dir, 'examples', 'shop');
}
const SHOP = shopDir();

interface Running {
  child: ChildProcess;
  base: string;
  output: () => string;
  exit: Promise<[number | null, NodeJS.Signals | null]>;
}

const running = new Set<Running>();

async function start(file: string, version: string, env: Record<string, string> = {}): Promise<Running> {
  const child = spawn(process.execPath, [join(SHOP, file)], {
    cwd: SHOP,
    // BERTH_ADMIN: nothing listens there unless a test says otherwise, so a service run here never reaches a node of `npm start`.
    env: { ...process.env, PORT: '0', BERTH_GROUP: 'g', BERTH_SERVICE: 's', BERTH_VERSION: version, BERTH_INSTANCE: `${file}-1`, BERTH_ADMIN: 'http://127.0.0.1:9', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exit = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const port = await new Promise<string>((resolve, reject) => {
    const onData = (): void => {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m?.[1] !== undefined) {
        child.stdout?.off('data', onData);
        resolve(m[1]);
      }
    };
    child.stdout?.on('data', onData);
    exit.then(([code]) => reject(new Error(`${file} exited ${code} before listening:\n${out}`)), reject);
  });
  const r = { child, base: `http://127.0.0.1:${port}`, output: () => out, exit };
  running.add(r);
  return r;
}

/** Resolves once the service has printed `text` (on stdout or stderr). */
function outputIncludes(r: Running, text: string): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (!r.output().includes(text)) return;
      r.child.stdout?.off('data', check);
      r.child.stderr?.off('data', check);
      resolve();
    };
    r.child.stdout?.on('data', check);
    r.child.stderr?.on('data', check);
    check();
  });
}

async function stop(r: Running): Promise<[number | null, NodeJS.Signals | null]> {
  running.delete(r);
  r.child.kill('SIGTERM');
  return r.exit;
}

const agent = new Agent();

async function call(
  r: Running,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD',
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string; json: () => Record<string, unknown> }> {
  const res = await request(r.base + path, { method, body: body ?? null, headers, dispatcher: agent });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

after(async () => {
  for (const r of [...running]) await stop(r);
  await agent.close();
});

const SERVICES = [
  ['tokens.mjs', '1.0.0'],
  ['charges.mjs', '1.0.0'],
  ['charges-v2.mjs', '2.0.0'],
  ['refunds.mjs', '1.0.0'],
  ['profiles.mjs', '1.0.0'],
  ['blobs.mjs', '1.0.0'],
  ['files.mjs', '1.0.0'],
] as const;

describe('every shop service', () => {
  for (const [file, version] of SERVICES) {
    it(`${file}-answers-health-404s-logs-and-exits-0-on-sigterm`, async () => {
      const svc = await start(file, version);
      const health = await call(svc, 'GET', '/health');
      assert.equal(health.status, 200);
      assert.deepEqual(health.json(), { status: 'ok', instance: `${file}-1`, version });
      const missing = await call(svc, 'GET', '/no/such/path');
      assert.equal(missing.status, 404);
      assert.equal(missing.json().error, 'not_found');
      assert.equal(missing.json().instance, `${file}-1`);
      assert.deepEqual(await stop(svc), [0, null]);
      assert.doesNotMatch(svc.output(), /GET \/health/, 'health checks are not logged');
      assert.match(svc.output(), /^GET \/no\/such\/path 404 \d+ms$/m);
    });
  }
});

describe('charges', () => {
  it('v1-and-v2-answer-different-shapes', async () => {
    const [v1, v2] = await Promise.all([start('charges.mjs', '1.0.0'), start('charges-v2.mjs', '2.0.0')]);
    const one = await call(v1, 'POST', '/charges', JSON.stringify({ amount: 12.5 }));
    assert.equal(one.status, 201);
    assert.equal(one.json().amount, 12.5);
    assert.equal(one.json().version, '1.0.0');
    assert.equal(one.json().currency, undefined);
    const two = await call(v2, 'POST', '/charges', JSON.stringify({ amount: 1250, currency: 'usd' }));
    assert.equal(two.status, 201);
    assert.equal(two.json().apiVersion, 2);
    assert.equal(two.json().version, '2.0.0');
    assert.deepEqual((two.json().charge as Record<string, unknown>).currency, 'USD');
    const id = (two.json().charge as { id: string }).id;
    assert.equal((await call(v2, 'GET', `/charges/${id}`)).status, 200);
    assert.equal((await call(v1, 'POST', '/charges', '{nope')).status, 400);
    assert.deepEqual(await stop(v1), [0, null]);
    assert.deepEqual(await stop(v2), [0, null]);
  });
});

describe('tokens', () => {
  it('issues-verifies-and-revokes-without-logging-the-token', async () => {
    const svc = await start('tokens.mjs', '1.0.0');
    const issued = await call(svc, 'POST', '/token', JSON.stringify({ user: 'ada' }));
    assert.equal(issued.status, 201);
    const token = issued.json().token as string;
    assert.ok(token.length >= 20);
    const ok = await call(svc, 'GET', `/verify?token=${token}`);
    assert.deepEqual([ok.status, ok.json().user], [200, 'ada']);
    assert.equal((await call(svc, 'POST', '/revoke', JSON.stringify({ token }))).status, 200);
    assert.equal((await call(svc, 'GET', `/verify?token=${token}`)).status, 401);
    assert.equal((await call(svc, 'POST', '/token', JSON.stringify({}))).status, 400);
    await stop(svc);
    assert.ok(!svc.output().includes(token));
  });
});

describe('profiles', () => {
  it('creates-replaces-reads-and-deletes', async () => {
    const svc = await start('profiles.mjs', '1.0.0');
    assert.equal((await call(svc, 'PUT', '/profiles/ada', JSON.stringify({ name: 'Ada' }))).status, 201);
    assert.equal((await call(svc, 'PUT', '/profiles/ada', JSON.stringify({ name: 'Ada L.' }))).status, 200);
    assert.deepEqual((await call(svc, 'GET', '/profiles/ada')).json().profile, { name: 'Ada L.' });
    assert.equal((await call(svc, 'PUT', '/profiles/ada', '[1]')).status, 400);
    assert.equal((await call(svc, 'DELETE', '/profiles/ada')).status, 200);
    assert.equal((await call(svc, 'GET', '/profiles/ada')).status, 404);
    await stop(svc);
  });
});

describe('blobs', () => {
  it('stores-bodies-and-refuses-oversize-ones-with-413', async () => {
    const svc = await start('blobs.mjs', '1.0.0', { BLOB_MAX_BYTES: '1000' });
    const body = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 256));
    const put = await call(svc, 'PUT', '/blobs/img/a.bin', body, { 'content-type': 'application/x-test' });
    assert.deepEqual([put.status, put.json().size], [201, 1000]);
    const res = await request(`${svc.base}/blobs/img/a.bin`, { dispatcher: agent });
    assert.equal(res.headers['content-type'], 'application/x-test');
    assert.equal(res.headers['x-berth-instance'], 'blobs.mjs-1');
    assert.deepEqual(Buffer.from(await res.body.arrayBuffer()), body);
    const big = await call(svc, 'PUT', '/blobs/big', Buffer.alloc(1001));
    assert.deepEqual([big.status, big.json().error], [413, 'too_large']);
    assert.equal((await call(svc, 'GET', '/blobs/big')).status, 404);
    await stop(svc);
  });

  it('finishes-an-in-flight-upload-after-sigterm-then-exits-0', async () => {
    const svc = await start('blobs.mjs', '1.0.0');
    const req = httpRequest(`${svc.base}/blobs/slow`, { method: 'PUT', agent: false, headers: { 'transfer-encoding': 'chunked' } });
    const answered = once(req, 'response') as Promise<[IncomingMessage]>;
    await new Promise<void>((resolve, reject) => req.write('first ', (err) => (err ? reject(err) : resolve())));
    const exit = stop(svc);
    // The service has begun stopping while the upload is half sent; the rest still lands.
    await outputIncludes(svc, 'SIGTERM');
    req.end('second');
    const [res] = await answered;
    let text = '';
    for await (const chunk of res) text += String(chunk);
    assert.deepEqual([res.statusCode, (JSON.parse(text) as { size: number }).size], [201, 12]);
    assert.deepEqual(await exit, [0, null]);
  });
});

describe('files', () => {
  it('lists-a-folder-and-answers-304-for-a-known-etag', async () => {
    const svc = await start('files.mjs', '1.0.0');
    const put = await call(svc, 'PUT', '/files/docs/terms.md', JSON.stringify({ content: '# Terms' }));
    assert.equal(put.status, 201);
    await call(svc, 'PUT', '/files/docs/legal/privacy.md', JSON.stringify({ content: 'x' }));
    const list = (await call(svc, 'GET', '/files?prefix=docs/')).json();
    assert.deepEqual(list.folders, ['docs/legal/']);
    assert.deepEqual((list.files as { path: string }[]).map((f) => f.path), ['docs/terms.md']);
    const etag = put.headers.etag as string;
    assert.equal((await call(svc, 'GET', '/files/docs/terms.md', undefined, { 'if-none-match': etag })).status, 304);
    await stop(svc);
  });
});

describe('calls between services through berth/client', () => {
  it('charges-and-profiles-ask-tokens-and-tokens-asks-profiles-all-with-the-request-id', async () => {
    // A real admin API over a real catalog, loaded with the shop's own manifest; the services register as a node would.
    const node = await startAdminNode(readFileSync(join(SHOP, 'berth.yaml'), 'utf8'));
    const env = { BERTH_ADMIN: node.url };
    const started: Running[] = [];
    try {
      const [tokens, profiles, charges] = await Promise.all([
        start('tokens.mjs', '1.0.0', env),
        start('profiles.mjs', '1.0.0', env),
        start('charges.mjs', '1.0.0', env),
      ]);
      started.push(tokens, profiles, charges);
      for (const [svc, group, service] of [[tokens, 'auth', 'tokens'], [profiles, 'users', 'profiles']] as const) {
        await node.catalog.put(instanceRecord({ id: `${service}.mjs-1`, group, service, version: '1.0.0', port: Number(new URL(svc.base).port) }));
      }

      assert.equal((await call(profiles, 'PUT', '/profiles/ada', JSON.stringify({ name: 'Ada' }))).status, 201);
      const issued = await call(tokens, 'POST', '/token', JSON.stringify({ user: 'ada' }), { 'x-request-id': 'tok-1' });
      assert.equal(issued.status, 201);
      assert.equal(issued.json().name, 'Ada', 'tokens asked profiles for the name');
      assert.match(profiles.output(), /^GET \/profiles\/ada 200 \d+ms$/m);
      const bearer = { authorization: `Bearer ${issued.json().token as string}` };

      const charge = await call(charges, 'POST', '/charges', JSON.stringify({ amount: 5 }), { ...bearer, 'x-request-id': 'pay-1' });
      assert.equal(charge.status, 201, charge.text);
      assert.equal(charge.json().user, 'ada');
      assert.deepEqual(charge.json().checkedBy, { instance: 'tokens.mjs-1', requestId: 'pay-1' }, 'tokens saw the request id charges got');
      assert.equal(charge.json().requestId, 'pay-1');

      const me = await call(profiles, 'GET', '/me', undefined, { ...bearer, 'x-request-id': 'me-1' });
      assert.deepEqual([me.status, me.json().user, me.json().profile], [200, 'ada', { name: 'Ada' }]);
      assert.equal((me.json().checkedBy as { requestId: string }).requestId, 'me-1');

      const forged = await call(charges, 'POST', '/charges', JSON.stringify({ amount: 5 }), { authorization: 'Bearer forged' });
      assert.deepEqual([forged.status, forged.json().error], [401, 'invalid_token']);
      const anonymous = await call(charges, 'POST', '/charges', JSON.stringify({ amount: 5 }));
      assert.deepEqual([anonymous.status, anonymous.json().user], [201, null]);

      // tokens gone (and still in the catalog): charges answers 503 rather than hanging or charging anyone.
      await stop(tokens);
      const down = await call(charges, 'POST', '/charges', JSON.stringify({ amount: 5 }), bearer);
      assert.deepEqual([down.status, down.json().error], [503, 'auth_unavailable']);
    } finally {
      for (const r of started) if (running.has(r)) await stop(r);
      await node.close();
    }
  });
});
