import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isBerthError } from '../errors.js';
import { ANONYMOUS, IDENTITY_HEADERS, IDENTITY_KEY_FILE, identityHeaders, isIdentityHeader, loadIdentityKey, verifyIdentity, type Identity } from './identity.js';

const KEY = randomBytes(32);
const NOW = 1_700_000_000;
const SIGN = { key: KEY, method: 'GET', path: '/orders/7?expand=lines', nowSeconds: NOW };

const ALICE: Identity = {
  kind: 'jwt',
  subject: 'alice',
  issuer: 'https://id.example.com/',
  roles: ['admin', 'billing'],
  scopes: ['orders:read', 'orders:write'],
  claims: { sub: 'alice', email: 'alice@example.com' },
};

/** The flat list as a header object, as Node gives it to a server (lower-case names). */
function asHeaders(list: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < list.length; i += 2) out[list[i]!] = list[i + 1]!;
  return out;
}

describe('identity headers', () => {
  it('round-trips-an-identity-through-signed-headers', () => {
    const headers = asHeaders(identityHeaders(ALICE, SIGN));
    assert.deepEqual(headers, {
      'x-berth-auth': 'jwt',
      'x-berth-subject': 'alice',
      'x-berth-issuer': 'https://id.example.com/',
      'x-berth-roles': 'admin,billing',
      'x-berth-scopes': 'orders:read orders:write',
      'x-berth-identity-time': String(NOW),
      'x-berth-signature': headers['x-berth-signature'],
    });
    assert.match(headers['x-berth-signature'] ?? '', /^v1=[A-Za-z0-9_-]{43}$/);
    const checked = verifyIdentity(headers, SIGN);
    assert.ok(checked.ok, checked.ok ? '' : checked.reason);
    assert.deepEqual(checked.identity, { ...ALICE, claims: {} }, 'everything but the claims, which are not sent');
  });

  it('omits-empty-values-but-always-sends-auth-time-and-signature', () => {
    const headers = asHeaders(identityHeaders(ANONYMOUS, SIGN));
    assert.deepEqual(Object.keys(headers).sort(), ['x-berth-auth', 'x-berth-identity-time', 'x-berth-signature']);
    const checked = verifyIdentity(headers, SIGN);
    assert.ok(checked.ok);
    assert.deepEqual(checked.identity, { kind: 'anonymous', subject: null, issuer: null, roles: [], scopes: [], claims: {} });
  });

  it('breaks-the-signature-when-any-field-or-the-request-changes', () => {
    const headers = asHeaders(identityHeaders(ALICE, SIGN));
    const tampered: [string, Record<string, string>, typeof SIGN][] = [
      ['auth', { ...headers, 'x-berth-auth': 'apikey' }, SIGN],
      ['subject', { ...headers, 'x-berth-subject': 'mallory' }, SIGN],
      ['issuer', { ...headers, 'x-berth-issuer': 'https://evil.example.com/' }, SIGN],
      ['roles', { ...headers, 'x-berth-roles': 'admin,billing,root' }, SIGN],
      ['scopes', { ...headers, 'x-berth-scopes': 'orders:read' }, SIGN],
      ['time', { ...headers, 'x-berth-identity-time': String(NOW + 1) }, SIGN],
      ['signature', { ...headers, 'x-berth-signature': `v1=${'A'.repeat(43)}` }, SIGN],
      ['method', headers, { ...SIGN, method: 'DELETE' }],
      ['path', headers, { ...SIGN, path: '/orders/8?expand=lines' }],
      ['query', headers, { ...SIGN, path: '/orders/7' }],
      ['key', headers, { ...SIGN, key: randomBytes(32) }],
    ];
    for (const [what, h, options] of tampered) {
      const checked = verifyIdentity(h, options);
      assert.deepEqual(checked, { ok: false, reason: 'signature invalid' }, what);
    }
    const { 'x-berth-roles': _dropped, ...withoutRoles } = headers;
    assert.equal(verifyIdentity(withoutRoles, SIGN).ok, false, 'a dropped header breaks it too');
  });

  it('refuses-a-stale-or-future-time-beyond-max-age', () => {
    const headers = asHeaders(identityHeaders(ALICE, SIGN));
    assert.ok(verifyIdentity(headers, { ...SIGN, nowSeconds: NOW + 300 }).ok, 'exactly max age is accepted');
    const stale = verifyIdentity(headers, { ...SIGN, nowSeconds: NOW + 301 });
    assert.ok(!stale.ok && /stale/.test(stale.reason));
    const future = verifyIdentity(headers, { ...SIGN, nowSeconds: NOW - 301 });
    assert.ok(!future.ok && /future/.test(future.reason));
    assert.ok(verifyIdentity(headers, { ...SIGN, nowSeconds: NOW + 20, maxAgeSeconds: 30 }).ok);
    assert.equal(verifyIdentity(headers, { ...SIGN, nowSeconds: NOW + 31, maxAgeSeconds: 30 }).ok, false);
  });

  it('refuses-missing-repeated-or-malformed-headers', () => {
    const headers = asHeaders(identityHeaders(ALICE, SIGN));
    assert.match((verifyIdentity({}, SIGN) as { reason: string }).reason, /did not come through a Berth gateway/);
    assert.equal(verifyIdentity({ ...headers, 'x-berth-subject': ['alice', 'bob'] }, SIGN).ok, false);
    assert.equal(verifyIdentity({ ...headers, 'x-berth-auth': 'root' }, SIGN).ok, false);
    assert.equal(verifyIdentity({ ...headers, 'x-berth-identity-time': 'soon' }, SIGN).ok, false);
    assert.equal(verifyIdentity({ ...headers, 'x-berth-signature': 'v2=abc' }, SIGN).ok, false);
  });

  it('strips-every-x-berth-header-but-the-timeout', () => {
    for (const name of Object.values(IDENTITY_HEADERS)) assert.ok(isIdentityHeader(name), name);
    assert.ok(isIdentityHeader('x-berth-something-new'), 'a header a later version adds is reserved already');
    assert.ok(!isIdentityHeader('x-berth-timeout-ms'));
    assert.ok(!isIdentityHeader('x-request-id'));
    assert.ok(!isIdentityHeader('authorization'));
    assert.ok(!isIdentityHeader('x-berthday'));
  });

  it('encodes-values-that-are-not-visible-ascii-so-a-subject-cannot-inject-a-header', async () => {
    const evil: Identity = {
      kind: 'jwt',
      subject: 'alice\r\nx-berth-roles: root\r\n\r\nGET / HTTP/1.1',
      issuer: 'https://id.example.com/ünï',
      roles: ['a,b', 'c%d', 'plain'],
      scopes: ['with space', 'é', '\ud800'],
      claims: {},
    };
    const list = identityHeaders(evil, SIGN);
    for (let i = 1; i < list.length; i += 2) assert.match(list[i]!, /^[\x21-\x7e ]+$/, `${list[i - 1]} is visible ASCII`);
    // A real server receives exactly what was sent: Node refuses nothing, and no header is added.
    const received = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
      const server = createServer((req, res) => {
        res.end();
        server.close();
        resolve(req.headers);
      });
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        const flat: [string, string][] = [];
        for (let i = 0; i < list.length; i += 2) flat.push([list[i]!, list[i + 1]!]);
        request({ port, host: '127.0.0.1', path: SIGN.path, method: 'GET', headers: Object.fromEntries(flat), agent: false }, (res) => res.resume()).on('error', reject).end();
      });
    });
    assert.deepEqual(Object.keys(received).filter((n) => n.startsWith('x-berth-')).sort(), Object.values(IDENTITY_HEADERS).sort());
    assert.ok(!('get / http/1.1' in received));
    const checked = verifyIdentity(received, SIGN);
    assert.ok(checked.ok, checked.ok ? '' : checked.reason);
    assert.equal(checked.identity.subject, evil.subject);
    assert.equal(checked.identity.issuer, evil.issuer);
    assert.deepEqual(checked.identity.roles, ['a,b', 'c%d', 'plain']);
    assert.deepEqual(checked.identity.scopes, ['with space', 'é', '\ufffd'], 'a lone surrogate becomes U+FFFD');
  });

  it('encodes-an-identity-once-and-reuses-it-for-every-request', () => {
    const a = identityHeaders(ALICE, SIGN);
    const b = identityHeaders(ALICE, { ...SIGN, path: '/other' });
    assert.deepEqual(a.slice(0, 10), b.slice(0, 10));
    assert.notEqual(a.at(-1), b.at(-1), 'the signature covers the path');
  });
});

describe('identity key', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-identity-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    delete process.env.BERTH_TEST_IDENTITY_KEY;
  });

  it('generates-a-key-once-with-mode-0600-and-reuses-it', async () => {
    const data = join(dir, 'generated');
    await mkdir(data);
    const first = await loadIdentityKey(null, data);
    assert.equal(first.length, 32);
    const path = join(data, IDENTITY_KEY_FILE);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await readFile(path, 'utf8')).trim(), first.toString('base64url'));
    const again = await loadIdentityKey(null, data);
    assert.deepEqual(again, first, 'a restart reads the same key');
    assert.deepEqual(await readdir(data), [IDENTITY_KEY_FILE], 'no temporary file left behind');
  });

  it('refuses-a-damaged-key-file-rather-than-replacing-it', async () => {
    const data = join(dir, 'damaged');
    await mkdir(data);
    await writeFile(join(data, IDENTITY_KEY_FILE), 'short\n');
    await assert.rejects(loadIdentityKey(null, data), (err) => isBerthError(err, 'BERTH_ERR_AUTH_CONFIG') && err.message.includes(IDENTITY_KEY_FILE));
    assert.equal(await readFile(join(data, IDENTITY_KEY_FILE), 'utf8'), 'short\n');
  });

  it('reads-a-key-from-the-environment-as-base64-or-raw-and-names-the-variable-otherwise', async () => {
    const ref = { env: 'BERTH_TEST_IDENTITY_KEY' };
    const key = randomBytes(32);
    process.env.BERTH_TEST_IDENTITY_KEY = key.toString('base64');
    assert.deepEqual(await loadIdentityKey(ref, dir), key);
    process.env.BERTH_TEST_IDENTITY_KEY = key.toString('base64url');
    assert.deepEqual(await loadIdentityKey(ref, dir), key);
    const raw = 'a passphrase of at least thirty-two characters!';
    process.env.BERTH_TEST_IDENTITY_KEY = raw;
    assert.deepEqual(await loadIdentityKey(ref, dir), Buffer.from(raw));
    process.env.BERTH_TEST_IDENTITY_KEY = 'too short';
    await assert.rejects(loadIdentityKey(ref, dir), (err) => isBerthError(err, 'BERTH_ERR_AUTH_CONFIG') && err.message.includes('BERTH_TEST_IDENTITY_KEY') && !err.message.includes('too short'));
    delete process.env.BERTH_TEST_IDENTITY_KEY;
    await assert.rejects(loadIdentityKey(ref, dir), (err) => isBerthError(err, 'BERTH_ERR_AUTH_CONFIG') && /BERTH_TEST_IDENTITY_KEY is not set/.test(err.message));
  });

  it('reads-a-key-from-a-file', async () => {
    const key = randomBytes(48);
    const file = join(dir, 'key.txt');
    await writeFile(file, `${key.toString('base64')}\n`);
    assert.deepEqual(await loadIdentityKey({ file }, dir), key);
    await assert.rejects(loadIdentityKey({ file: join(dir, 'missing') }, dir), (err) => isBerthError(err, 'BERTH_ERR_AUTH_CONFIG') && err.message.includes('missing'));
  });
});
