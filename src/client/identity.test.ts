import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { identityHeaders, type Identity } from '../security/identity.js';
import { verifyIdentity, type IdentityCheck, type VerifyIdentityOptions } from './index.js';

const KEY = randomBytes(32);
const BOB: Identity = { kind: 'apikey', subject: 'bob', issuer: null, roles: ['batch'], scopes: ['charges:write'], claims: {} };

describe('berth/client verifyIdentity', () => {
  let server: Server;
  let port: number;
  /** What the instance's handler makes of each request, with the options the test sets. */
  let options: VerifyIdentityOptions = {};
  const seen: IdentityCheck[] = [];
  const savedEnv = process.env.BERTH_IDENTITY_KEY;

  before(async () => {
    server = createServer((req: IncomingMessage, res) => {
      seen.push(verifyIdentity(req, options));
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    if (savedEnv === undefined) delete process.env.BERTH_IDENTITY_KEY;
    else process.env.BERTH_IDENTITY_KEY = savedEnv;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Sends `method path` with `headers` (a flat list, as the gateway builds it); resolves with what the handler saw. */
  function send(method: string, path: string, headers: string[]): Promise<IdentityCheck> {
    return new Promise((resolve, reject) => {
      const object: Record<string, string> = {};
      for (let i = 0; i < headers.length; i += 2) object[headers[i]!] = headers[i + 1]!;
      const req = request({ host: '127.0.0.1', port, method, path, headers: object, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(seen.at(-1)!));
      });
      req.on('error', reject);
      req.end();
    });
  }

  const signed = (method: string, path: string, key = KEY, nowSeconds = Math.floor(Date.now() / 1000)): string[] => identityHeaders(BOB, { key, method, path, nowSeconds });

  it('verifies-what-the-gateway-signed-with-the-key-from-the-environment', async () => {
    process.env.BERTH_IDENTITY_KEY = KEY.toString('base64url');
    options = {};
    const check = await send('POST', '/charges?dry=1', signed('POST', '/charges?dry=1'));
    assert.ok(check.ok, check.ok ? '' : check.reason);
    assert.deepEqual(check.identity, { ...BOB, claims: {} });
  });

  it('refuses-a-request-signed-for-another-method-or-path-or-key', async () => {
    process.env.BERTH_IDENTITY_KEY = KEY.toString('base64url');
    options = {};
    assert.deepEqual(await send('DELETE', '/charges?dry=1', signed('POST', '/charges?dry=1')), { ok: false, reason: 'signature invalid' });
    assert.deepEqual(await send('POST', '/charges', signed('POST', '/charges?dry=1')), { ok: false, reason: 'signature invalid' });
    assert.deepEqual(await send('POST', '/charges', signed('POST', '/charges', randomBytes(32))), { ok: false, reason: 'signature invalid' });
    const none = await send('GET', '/charges', []);
    assert.ok(!none.ok && /did not come through a Berth gateway/.test(none.reason), 'reached around the gateway');
  });

  it('uses-a-key-given-in-options-over-the-environment-and-honours-max-age', async () => {
    process.env.BERTH_IDENTITY_KEY = randomBytes(32).toString('base64url');
    const other = randomBytes(32);
    options = { key: other };
    assert.ok((await send('GET', '/x', signed('GET', '/x', other))).ok);
    options = { key: other, maxAgeSeconds: 10 };
    const old = await send('GET', '/x', signed('GET', '/x', other, Math.floor(Date.now() / 1000) - 60));
    assert.ok(!old.ok && /stale/.test(old.reason));
  });

  it('fails-closed-without-a-key', async () => {
    delete process.env.BERTH_IDENTITY_KEY;
    options = {};
    const check = await send('GET', '/x', signed('GET', '/x'));
    assert.ok(!check.ok && /BERTH_IDENTITY_KEY is not set/.test(check.reason));
  });
});
