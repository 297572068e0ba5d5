import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls, { type TLSSocket } from 'node:tls';
import { Agent, request, WebSocket } from 'undici';
import { makeCerts, type Certs } from '../support/certs.js';
import { BerthProcess, makeProject, runCli, type LogLine } from '../support/node-process.js';

/** A TLS 1.1 client. SECLEVEL=0: OpenSSL 3 would not even offer TLS 1.1 otherwise, and the refusal must be the listener's. */
const TLS_1_1: tls.ConnectionOptions = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };

const HEALTH = '{ http: /health, interval: 200ms, timeout: 200ms, startPeriod: 0s }';

/**
 * A node with an HTTPS listener (its pair in `edge/`, replaced by rename in
 * the rotation test) that redirects the plain one, and three services: `web`
 * over plain HTTP, `secure` reached over mutual TLS, and `untrusted`, whose
 * instance's certificate no system CA signed, reached with `tls: true`.
 */
function manifest(certs: Certs, cert = 'edge/live.crt'): string {
  return `admin: { listen: "127.0.0.1:0" }
gateway:
  listen: "127.0.0.1:0"
  tls:
    listen: "127.0.0.1:0"
    cert: ${cert}
    key: edge/live.key
    redirect: true
    hsts: { maxAge: 1d, includeSubDomains: true }
dataDir: data
groups:
  core:
    services:
      web:
        command: node web.mjs
        health: ${HEALTH}
      secure:
        command: node web.mjs
        health: ${HEALTH}
        env: { TLS_CERT: "${certs.server.certFile}", TLS_KEY: "${certs.server.keyFile}", TLS_CA: "${certs.ca.certFile}" }
        tls: { ca: "${certs.ca.certFile}", cert: "${certs.client.certFile}", key: "${certs.client.keyFile}" }
      untrusted:
        command: node web.mjs
        health: ${HEALTH}
        env: { TLS_CERT: "${certs.other.certFile}", TLS_KEY: "${certs.other.keyFile}" }
        tls: true
`;
}

/**
 * Puts `cert` and `key` in place the way cert-manager and certbot do: each
 * written beside, then renamed over the file in use (atomic for readers).
 */
async function install(dir: string, cert: string, key: string): Promise<void> {
  await writeFile(join(dir, 'next.crt'), cert);
  await writeFile(join(dir, 'next.key'), key);
  await rename(join(dir, 'next.crt'), join(dir, 'edge/live.crt'));
  await rename(join(dir, 'next.key'), join(dir, 'edge/live.key'));
}

/** Opens a TLS connection and resolves with the handshake's outcome: the server certificate's serial, or the error code. */
async function handshake(url: string, options: tls.ConnectionOptions): Promise<{ serial?: string; protocol?: string | null; error?: string }> {
  const { hostname, port } = new URL(url);
  const socket = tls.connect({ host: hostname, port: Number(port), ...options });
  // Not events.once: it would reject on the handshake error this resolves with.
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  try {
    await once(socket, 'secureConnect');
    return { serial: socket.getPeerCertificate().serialNumber, protocol: socket.getProtocol() };
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? String(err) };
  } finally {
    socket.destroy();
    await closed;
  }
}

/** GET over node:https on `agent`: the status, the body, and the connection it went over. */
function httpsGet(url: string, agent: https.Agent): Promise<{ status: number; body: string; socket: TLSSocket; serial: string }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { agent }, (res) => {
        const socket = res.socket as TLSSocket;
        const serial = socket.getPeerCertificate().serialNumber;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, socket, serial }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

describe('HTTPS at the gateway and TLS to instances (real berth up)', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let certs: Certs;
  let node: BerthProcess;
  /** The plain listener (which redirects) and the HTTPS one. */
  let plain: string;
  let secure: string;
  /** Trusts the test CA: what a client of the HTTPS listener uses. */
  let client: Agent;

  async function get(url: string): Promise<{ status: number; headers: Record<string, unknown>; json: Record<string, unknown> }> {
    const res = await request(url, { dispatcher: client });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
  }

  before(async () => {
    project = await makeProject('');
    await Promise.all([mkdir(join(project.dir, 'pki')), mkdir(join(project.dir, 'edge'))]);
    certs = await makeCerts(join(project.dir, 'pki'));
    await Promise.all([writeFile(join(project.dir, 'edge/live.crt'), certs.server.cert), writeFile(join(project.dir, 'edge/live.key'), certs.server.key)]);
    await writeFile(project.file, manifest(certs));
    client = new Agent({ connect: { ca: certs.ca.cert } });
    node = await BerthProcess.start(project.file);
    plain = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    secure = String((await node.waitForLog((l) => l.event === 'gateway.listening' && String(l.url).startsWith('https://'))).url);
    await node.waitForInstances((all) => ['web', 'secure'].every((s) => all.some((r) => r.service === s && r.status === 'passing')));
  });

  after(async () => {
    await client?.close();
    await node?.stop();
    await project?.cleanup();
  });

  it('serves HTTPS with the configured certificate, HSTS, and x-forwarded-proto https to the instance', async () => {
    assert.match(secure, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(new URL(secure).port, '0');
    const res = await get(`${secure}/core/web/echo?x=1`);
    assert.equal(res.status, 200);
    assert.equal(res.json.url, '/echo?x=1');
    assert.equal((res.json.headers as Record<string, string>)['x-forwarded-proto'], 'https');
    assert.equal(res.headers['strict-transport-security'], 'max-age=86400; includeSubDomains');
    // The gateway's own answers over HTTPS carry it too.
    const none = await get(`${secure}/nowhere`);
    assert.equal(none.status, 404);
    assert.equal(none.headers['strict-transport-security'], 'max-age=86400; includeSubDomains');
    assert.equal((await handshake(secure, { ca: certs.ca.cert })).serial, certs.server.serial);
    // A client that trusts only another CA does not get in.
    assert.equal((await handshake(secure, { ca: certs.otherCa.cert })).error, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('refuses a TLS 1.1 client and takes a TLS 1.2 one', async () => {
    const old = await handshake(secure, { ca: certs.ca.cert, ...TLS_1_1 });
    assert.equal(old.error, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'the listener answers with a protocol_version alert');
    const tls12 = await handshake(secure, { ca: certs.ca.cert, maxVersion: 'TLSv1.2' });
    assert.equal(tls12.protocol, 'TLSv1.2');
  });

  it('redirects the plain listener with 308 to the same path and query on the HTTPS port', async () => {
    const res = await request(`${plain}/core/web/echo?x=1&y=two`, { method: 'GET' });
    await res.body.dump();
    assert.equal(res.statusCode, 308);
    assert.equal(res.headers.location, `${secure}/core/web/echo?x=1&y=two`);
    // Nothing reached an instance over plain HTTP: the redirect is the whole answer.
    const line = await node.waitForLog((l) => l.event === 'access' && l.status === 308);
    assert.equal(line.instance, null);
  });

  it('rotates the certificate without dropping connections, and keeps the pair in use when the new one is bad', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: certs.ca.cert });
    try {
      const first = await httpsGet(`${secure}/core/web/echo`, agent);
      assert.equal(first.status, 200);
      assert.equal(first.serial, certs.server.serial);

      const reloaded = node.nextLog((l) => l.event === 'gateway.certificate-reloaded');
      await install(project.dir, certs.server2.cert, certs.server2.key);
      const event = await reloaded;
      assert.equal(event.cert, join(project.dir, 'edge/live.crt'));
      assert.ok(!Number.isNaN(Date.parse(String(event.notAfter))), String(event.notAfter));
      assert.equal((await handshake(secure, { ca: certs.ca.cert })).serial, certs.server2.serial, 'a new connection gets the new certificate');
      assert.equal((await handshake(secure, { ca: certs.ca.cert, ...TLS_1_1 })).error, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'the new context keeps the TLS floor');

      // The connection opened before the rotation is still up, still on the old certificate, and serves.
      const second = await httpsGet(`${secure}/core/web/echo`, agent);
      assert.equal(second.status, 200);
      assert.equal(second.socket, first.socket, 'the same keep-alive connection');
      assert.equal(second.serial, certs.server.serial);

      // A renewal gone wrong: a certificate whose key is not the one beside it.
      const rejected = node.nextLog((l) => l.event === 'gateway.certificate-rejected');
      await install(project.dir, certs.other.cert, certs.server2.key);
      const refusal = await rejected;
      assert.equal(refusal.level, 'error');
      assert.match(JSON.stringify(refusal.err), /does not belong to the certificate/);
      assert.equal((await handshake(secure, { ca: certs.ca.cert })).serial, certs.server2.serial, 'the pair in use stays');
      assert.equal((await get(`${secure}/core/web/echo`)).status, 200);
    } finally {
      agent.destroy();
      await install(project.dir, certs.server2.cert, certs.server2.key);
    }
  });

  it('reaches a service over mutual TLS: checks and requests carry the client certificate', async () => {
    const [instance] = (await node.instances('secure')).filter((r) => r.status === 'passing');
    assert.ok(instance, 'secure has a passing instance');
    // The instance does demand a client certificate: without one it is not reachable, so passing checks sent one.
    await assert.rejects(request(`https://127.0.0.1:${instance.port}/health`, { dispatcher: client }).then((r) => r.body.dump()));

    const res = await get(`${secure}/core/secure/echo`);
    assert.equal(res.status, 200);
    assert.equal(res.json.clientCert, 'berth-test-client');
    assert.equal((res.json.headers as Record<string, string>)['x-forwarded-proto'], 'https');
  });

  it('proxies a WebSocket upgrade from the HTTPS listener to a service reached over mutual TLS', async () => {
    const ws = new WebSocket(`${secure.replace('https', 'wss')}/core/secure/ws`, { dispatcher: client });
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => ws.send('over tls'));
      ws.addEventListener('message', (e) => {
        messages.push(String(e.data));
        ws.close();
      });
      ws.addEventListener('close', () => resolve());
      ws.addEventListener('error', () => reject(new Error('websocket error')));
    });
    assert.deepEqual(messages, ['echo: over tls']);
  });

  it('never passes an instance whose certificate the system CAs do not sign (tls: true verifies)', async () => {
    const critical = await node.waitForLog((l: LogLine) => l.event === 'instance.status' && l.service === 'untrusted' && l.to === 'critical');
    assert.match(String(critical.check), /unable to verify/);
    assert.ok(!node.logs.some((l) => l.event === 'instance.status' && l.service === 'untrusted' && l.to === 'passing'), 'never passing');
    const res = await get(`${secure}/core/untrusted/echo`);
    assert.equal(res.status, 503);
    assert.equal(res.json.code, 'BERTH_ERR_NO_INSTANCE');
  });

  it('refuses a reload whose certificate file is missing, naming it, and keeps serving', async () => {
    const good = await readFile(project.file, 'utf8');
    const missing = join(project.dir, 'edge/missing.crt');
    try {
      await writeFile(project.file, manifest(certs, 'edge/missing.crt'));
      const cli = await runCli(['reload', '-f', project.file]);
      assert.equal(cli.code, 1, cli.stdout + cli.stderr);
      assert.ok(cli.stderr.includes(missing), cli.stderr);

      const api = await node.call('POST', '/v1/reload');
      // Refused like a reload that needs a restart (409), with the file's own error as the reason.
      assert.equal(api.status, 409);
      const body = api.body as { code: string; message: string };
      assert.equal(body.code, 'BERTH_ERR_RELOAD_REFUSED');
      assert.ok(body.message.includes(missing), body.message);
      const failed = await node.waitForLog((l) => l.event === 'node.reload-failed');
      assert.equal(failed.code, 'BERTH_ERR_RELOAD_REFUSED');

      // The listener in use was not touched: same port, still serving, never reopened.
      const res = await get(`${secure}/core/web/echo`);
      assert.equal(res.status, 200);
      assert.equal(node.logs.filter((l) => l.event === 'gateway.listening' && String(l.url).startsWith('https://')).length, 1);
      assert.ok(!node.logs.some((l) => l.event === 'node.reloaded'));
    } finally {
      await writeFile(project.file, good);
    }
  });
});
