import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type tls from 'node:tls';
import { useCerts } from '../../test/support/certs.js';
import type { ServiceSpec, UpstreamTlsSpec } from '../manifest/types.js';
import type { UpstreamClient } from './http1/client.js';
import { UpstreamTls } from './upstream-tls.js';

const pki = useCerts('berth-upstream-tls-');

interface Instance {
  origin: string;
  /** Handshakes the server refused, by error code. */
  refused: string[];
  close(): Promise<void>;
}

/** An instance answering each request with its client certificate's CN ('-' without one). */
async function instance(server: http.Server | https.Server, scheme: 'http' | 'https'): Promise<Instance> {
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket as Partial<tls.TLSSocket>;
    const peer = socket.getPeerCertificate?.();
    res.end(peer && 'subject' in peer && peer.subject ? peer.subject.CN : '-');
  });
  const inst: Instance = {
    origin: '',
    refused: [],
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  server.on('tlsClientError', (err: NodeJS.ErrnoException) => inst.refused.push(err.code ?? err.message));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  inst.origin = `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return inst;
}

const mutualTls = (): Promise<Instance> =>
  instance(https.createServer({ cert: pki.certs.server.cert, key: pki.certs.server.key, ca: pki.certs.ca.cert, requestCert: true, rejectUnauthorized: true }), 'https');
const untrusted = (): Promise<Instance> => instance(https.createServer({ cert: pki.certs.other.cert, key: pki.certs.other.key }), 'https');

const service = (name: string, tls: UpstreamTlsSpec | null): ServiceSpec => ({ group: 'g', name, upstreamTls: tls }) as ServiceSpec;

const OPTIONS = { connections: 4, keepAliveTimeoutMs: 4_000, keepAliveMaxTimeoutMs: 60_000, connectTimeoutMs: 5_000 };

/** An UpstreamTls with one service `s` reached with these settings: its client, and close(). */
async function agentWith(tls: UpstreamTlsSpec): Promise<{ client: UpstreamClient; close(): Promise<void> }> {
  const upstream = new UpstreamTls(OPTIONS);
  await upstream.configure([service('s', tls)]);
  return { client: upstream.clientFor({ group: 'g', name: 's' }), close: () => upstream.close() };
}

/** GET / through the client: the status and the body, or the client's error. */
function get(agent: { client: UpstreamClient }, origin: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks: Buffer[] = [];
    agent.client.dispatch(
      { origin, path: '/', method: 'GET', headers: [], body: null },
      {
        onRequestStart: () => undefined,
        onResponseStart: (_c, s) => (status = s),
        onResponseData: (_c, chunk) => chunks.push(chunk),
        onResponseEnd: () => resolve({ status, body: Buffer.concat(chunks).toString() }),
        onResponseError: (_c, err) => reject(err),
      },
    );
  });
}

describe('UpstreamTls', { timeout: 10_000 }, () => {
  it('presents-the-client-certificate-the-origin-is-given', async () => {
    const server = await mutualTls();
    const agent = await agentWith({ caFile: pki.certs.ca.certFile, certFile: pki.certs.client.certFile, keyFile: pki.certs.client.keyFile, verify: true });
    try {
      assert.deepEqual(await get(agent, server.origin), { status: 200, body: 'berth-test-client' });
      assert.deepEqual(server.refused, []);
    } finally {
      await agent.close();
      await server.close();
    }
  });

  it('fails-against-mutual-tls-without-a-client-certificate', async () => {
    const server = await mutualTls();
    const agent = await agentWith({ caFile: pki.certs.ca.certFile, verify: true });
    try {
      await assert.rejects(get(agent, server.origin));
      assert.deepEqual(server.refused, ['ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE']);
    } finally {
      await agent.close();
      await server.close();
    }
  });

  it('reaches-an-untrusted-certificate-only-with-verify-off', async () => {
    const server = await untrusted();
    const lax = await agentWith({ verify: false });
    const strict = await agentWith({ caFile: pki.certs.ca.certFile, verify: true });
    try {
      assert.deepEqual(await get(lax, server.origin), { status: 200, body: '-' });
      await assert.rejects(get(strict, server.origin), (err: NodeJS.ErrnoException) => err.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    } finally {
      await lax.close();
      await strict.close();
      await server.close();
    }
  });

  it('gives-each-service-its-own-settings-and-plain-services-the-shared-client', async () => {
    const mtls = await mutualTls();
    const other = await untrusted();
    const upstream = new UpstreamTls(OPTIONS);
    await upstream.configure([
      service('mtls', { caFile: pki.certs.ca.certFile, certFile: pki.certs.client.certFile, keyFile: pki.certs.client.keyFile, verify: true }),
      service('lax', { verify: false }),
      service('plain', null),
    ]);
    try {
      assert.deepEqual(await get({ client: upstream.clientFor({ group: 'g', name: 'mtls' }) }, mtls.origin), { status: 200, body: 'berth-test-client' });
      assert.deepEqual(await get({ client: upstream.clientFor({ group: 'g', name: 'lax' }) }, other.origin), { status: 200, body: '-' });
      assert.equal(upstream.clientFor({ group: 'g', name: 'plain' }), upstream.client);
      assert.equal(upstream.secure({ group: 'g', name: 'mtls' }), true);
      assert.equal(upstream.secure({ group: 'g', name: 'plain' }), false);
      // A reload that keeps a service's settings keeps its client (and its connections); one that changes them replaces it.
      const before = upstream.clientFor({ group: 'g', name: 'mtls' });
      await upstream.configure([service('mtls', { caFile: pki.certs.ca.certFile, certFile: pki.certs.client.certFile, keyFile: pki.certs.client.keyFile, verify: true }), service('lax', { verify: true })]);
      assert.equal(upstream.clientFor({ group: 'g', name: 'mtls' }), before);
      await assert.rejects(get({ client: upstream.clientFor({ group: 'g', name: 'lax' }) }, other.origin));
      // A file that cannot be read refuses the whole configuration and changes nothing.
      await assert.rejects(upstream.configure([service('mtls', { caFile: join(pki.root, 'missing.pem'), verify: true })]), /missing\.pem/);
      assert.equal(upstream.clientFor({ group: 'g', name: 'mtls' }), before);
    } finally {
      await upstream.close();
      await Promise.all([mtls.close(), other.close()]);
    }
  });
});
