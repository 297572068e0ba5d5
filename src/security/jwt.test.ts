import assert from 'node:assert/strict';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, importPKCS8, SignJWT, UnsecuredJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { isBerthError } from '../errors.js';
import type { JwtIssuerSpec, JwtKeysSpec } from '../manifest/types.js';
import { FakeClock } from '../testing/fake-clock.js';
import { bearerToken, JwtVerifier, type JwtCheck } from './jwt.js';

const NOW_S = 1_700_000_000;
const SECRET = Buffer.from('a shared secret of more than thirty-two bytes');

function issuer(name: string, keys: JwtKeysSpec, overrides: Partial<JwtIssuerSpec> = {}): JwtIssuerSpec {
  return {
    name,
    issuer: `https://${name}.example.com/`,
    audience: ['orders'],
    algorithms: ['RS256'],
    keys,
    clockSkewMs: 0,
    rolesClaim: 'roles',
    scopesClaim: 'scope',
    ...overrides,
  };
}

interface KeyPair {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

/** A token as an issuer would sign it: `iss`, `aud`, `sub`, an hour of life from NOW_S. */
function token(key: CryptoKey | Uint8Array, alg: string, claims: JWTPayload & { iss: string }, header: { kid?: string } = {}): Promise<string> {
  return new SignJWT({ aud: 'orders', sub: 'alice', iat: NOW_S, exp: NOW_S + 3600, ...claims }).setProtectedHeader({ alg, ...header }).sign(key);
}

function refused(check: JwtCheck): string {
  assert.equal(check.ok, false, 'refused');
  assert.ok(!check.ok);
  assert.equal(check.code, 'BERTH_ERR_UNAUTHENTICATED');
  return check.reason;
}

describe('JWT verification', () => {
  let dir: string;
  let clock: FakeClock;
  let rsa: KeyPair;
  let ec: KeyPair;
  let ed: KeyPair;
  let rsaPem: string;
  let verifier: JwtVerifier;
  const ISSUERS = ['rsa', 'ec', 'ed', 'hmac', 'keycloak'];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-jwt-'));
    clock = new FakeClock(NOW_S * 1000);
    rsa = await generateKeyPair('RS256', { extractable: true });
    ec = await generateKeyPair('ES256');
    ed = await generateKeyPair('EdDSA');
    rsaPem = await exportSPKI(rsa.publicKey);
    await writeFile(join(dir, 'rsa.pem'), rsaPem);
    await writeFile(join(dir, 'ec.json'), JSON.stringify({ keys: [{ ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256' }] }));
    await writeFile(join(dir, 'ed.pem'), await exportSPKI(ed.publicKey));
    verifier = await JwtVerifier.create(
      [
        issuer('rsa', { kind: 'public-key', file: join(dir, 'rsa.pem') }),
        issuer('ec', { kind: 'jwks-file', file: join(dir, 'ec.json') }, { algorithms: ['ES256'], scopesClaim: 'scp' }),
        issuer('ed', { kind: 'public-key', file: join(dir, 'ed.pem') }, { algorithms: ['EdDSA'], audience: [] }),
        issuer('hmac', { kind: 'secret', secret: { env: 'NOT_READ_IN_TESTS' } }, { algorithms: ['HS256'] }),
        issuer('keycloak', { kind: 'public-key', file: join(dir, 'rsa.pem') }, { issuer: 'https://keycloak.example.com/realms/a', rolesClaim: 'realm_access.roles' }),
      ],
      { clock, loadSecret: () => Promise.resolve(SECRET) },
    );
  });

  after(async () => {
    verifier.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts-rs256-es256-eddsa-and-hs256-tokens-and-reads-roles-and-scopes', async () => {
    const rs = await verifier.verify(await token(rsa.privateKey, 'RS256', { iss: 'https://rsa.example.com/', roles: ['admin', 'billing'], scope: 'orders:read orders:write' }), ISSUERS);
    assert.ok(rs.ok, rs.ok ? '' : rs.reason);
    assert.equal(rs.issuerName, 'rsa');
    assert.deepEqual({ ...rs.identity, claims: undefined }, { kind: 'jwt', subject: 'alice', issuer: 'https://rsa.example.com/', roles: ['admin', 'billing'], scopes: ['orders:read', 'orders:write'], claims: undefined });
    assert.equal(rs.identity.claims.aud, 'orders', 'the claims are kept for authorize rules');

    const es = await verifier.verify(await token(ec.privateKey, 'ES256', { iss: 'https://ec.example.com/', roles: 'reader writer', scp: ['a', 'b'] }, { kid: 'ec-1' }), ISSUERS);
    assert.ok(es.ok, es.ok ? '' : es.reason);
    assert.deepEqual([es.identity.roles, es.identity.scopes], [['reader', 'writer'], ['a', 'b']], 'roles as a string, scopes as a list (scp)');

    const eddsa = await verifier.verify(await token(ed.privateKey, 'EdDSA', { iss: 'https://ed.example.com/', aud: 'anything' }), ISSUERS);
    assert.ok(eddsa.ok, eddsa.ok ? '' : eddsa.reason);
    assert.deepEqual([eddsa.issuerName, eddsa.identity.roles, eddsa.identity.scopes], ['ed', [], []], 'no audience configured: aud not checked');

    const hs = await verifier.verify(await token(SECRET, 'HS256', { iss: 'https://hmac.example.com/', sub: undefined }), ISSUERS);
    assert.ok(hs.ok, hs.ok ? '' : hs.reason);
    assert.equal(hs.identity.subject, null, 'no sub: no subject');

    const kc = await verifier.verify(await token(rsa.privateKey, 'RS256', { iss: 'https://keycloak.example.com/realms/a', realm_access: { roles: ['ops'] } }), ISSUERS);
    assert.ok(kc.ok, kc.ok ? '' : kc.reason);
    assert.deepEqual(kc.identity.roles, ['ops'], 'a dotted roles claim reads a nested one');
  });

  it('refuses-alg-none', async () => {
    const unsigned = new UnsecuredJWT({ iss: 'https://rsa.example.com/', aud: 'orders', sub: 'alice', exp: NOW_S + 60 }).encode();
    assert.equal(refused(await verifier.verify(unsigned, ISSUERS)), 'algorithm not allowed for issuer rsa');
  });

  it('refuses-hs256-signed-with-the-rsa-public-key-as-the-secret', async () => {
    const forged = await token(new TextEncoder().encode(rsaPem), 'HS256', { iss: 'https://rsa.example.com/', roles: ['admin'] });
    assert.equal(refused(await verifier.verify(forged, ISSUERS)), 'algorithm not allowed for issuer rsa');
  });

  it('refuses-an-algorithm-the-issuer-does-not-use-even-with-a-good-signature', async () => {
    // The issuer's own RSA key, used with RS384: a valid signature, by an algorithm the issuer does not use.
    const same = await importPKCS8(await exportPKCS8(rsa.privateKey), 'RS384');
    const rs384 = await token(same, 'RS384', { iss: 'https://rsa.example.com/' });
    assert.equal(refused(await verifier.verify(rs384, ISSUERS)), 'algorithm not allowed for issuer rsa');
  });

  it('refuses-expired-and-not-yet-valid-tokens-with-the-configured-skew', async () => {
    const iss = 'https://rsa.example.com/';
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss, exp: NOW_S - 1 }), ISSUERS)), 'token expired');
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss, nbf: NOW_S + 10 }), ISSUERS)), 'token not yet valid');
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss, exp: undefined }), ISSUERS)), 'token has no exp claim');
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss, iat: NOW_S + 60 }), ISSUERS)), 'token issued in the future');

    const skewed = await JwtVerifier.create([issuer('rsa', { kind: 'public-key', file: join(dir, 'rsa.pem') }, { clockSkewMs: 30_000 })], { clock });
    const lateBy10 = await token(rsa.privateKey, 'RS256', { iss, exp: NOW_S - 10 });
    const earlyBy10 = await token(rsa.privateKey, 'RS256', { iss, nbf: NOW_S + 10, iat: NOW_S + 10 });
    assert.ok((await skewed.verify(lateBy10, ['rsa'])).ok, 'expired 10s ago, within 30s of skew');
    assert.ok((await skewed.verify(earlyBy10, ['rsa'])).ok, 'valid in 10s, within 30s of skew');
    assert.equal(refused(await skewed.verify(await token(rsa.privateKey, 'RS256', { iss, exp: NOW_S - 31 }), ['rsa'])), 'token expired');
    assert.equal(refused(await skewed.verify(await token(rsa.privateKey, 'RS256', { iss, nbf: NOW_S + 31 }), ['rsa'])), 'token not yet valid');
    clock.advance(40_000);
    assert.equal(refused(await skewed.verify(lateBy10, ['rsa'])), 'token expired', 'time moves with the clock');
    clock.advance(-40_000);
  });

  it('refuses-a-wrong-audience-and-an-issuer-not-accepted-here', async () => {
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss: 'https://rsa.example.com/', aud: ['billing'] }), ISSUERS)), 'audience not accepted');
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss: 'https://rsa.example.com/', aud: undefined }), ISSUERS)), 'token has no aud claim');
    assert.equal(refused(await verifier.verify(await token(rsa.privateKey, 'RS256', { iss: 'https://unknown.example.com/' }), ISSUERS)), 'issuer not accepted');
    const good = await token(rsa.privateKey, 'RS256', { iss: 'https://rsa.example.com/' });
    assert.equal(refused(await verifier.verify(good, ['ec', 'hmac'])), 'issuer not accepted', 'a known issuer this route does not accept');
    // A token naming one issuer but signed by another's key gets that issuer's keys only.
    const crossed = await token(ec.privateKey, 'ES256', { iss: 'https://rsa.example.com/' }, { kid: 'ec-1' });
    assert.equal(refused(await verifier.verify(crossed, ISSUERS)), 'algorithm not allowed for issuer rsa');
  });

  it('refuses-a-tampered-payload-or-signature', async () => {
    const good = await token(rsa.privateKey, 'RS256', { iss: 'https://rsa.example.com/', roles: ['reader'] });
    const [header, payload, signature] = good.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as JWTPayload;
    const promoted = Buffer.from(JSON.stringify({ ...claims, roles: ['admin'] })).toString('base64url');
    assert.equal(refused(await verifier.verify(`${header}.${promoted}.${signature}`, ISSUERS)), 'signature invalid');
    const flipped = `${signature.slice(0, 10)}${signature[10] === 'A' ? 'B' : 'A'}${signature.slice(11)}`;
    assert.equal(refused(await verifier.verify(`${header}.${payload}.${flipped}`, ISSUERS)), 'signature invalid');
  });

  it('refuses-a-malformed-token-without-echoing-it', async () => {
    for (const bad of ['', 'abc', 'a.b.c', 'eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln', 'x'.repeat(5000)]) {
      const reason = refused(await verifier.verify(bad, ISSUERS));
      assert.equal(reason, 'malformed token', bad.slice(0, 20));
    }
    const secretish = await token(rsa.privateKey, 'RS256', { iss: 'https://rsa.example.com/', exp: NOW_S - 5 });
    const reason = refused(await verifier.verify(secretish, ISSUERS));
    assert.ok(!reason.includes(secretish.split('.')[1]!) && !reason.includes('alice'));
  });

  it('refuses-issuer-settings-whose-algorithms-do-not-fit-their-keys', async () => {
    const pem = { kind: 'public-key', file: join(dir, 'rsa.pem') } as const;
    const secret = { kind: 'secret', secret: { env: 'X' } } as const;
    const loadSecret = (): Promise<Buffer> => Promise.resolve(SECRET);
    const cases: [JwtIssuerSpec, RegExp][] = [
      [issuer('a', pem, { algorithms: ['HS256'] }), /HS256 needs keys.secret/],
      [issuer('b', pem, { algorithms: ['none'] }), /"none" is not supported/],
      [issuer('c', pem, { algorithms: [] }), /algorithms is empty/],
      [issuer('d', secret, { algorithms: ['RS256'] }), /does not fit a shared secret/],
      [issuer('e', pem, { algorithms: ['ES256'] }), /holds no ES256 public key/],
      [issuer('f', { kind: 'public-key', file: join(dir, 'missing.pem') }), /cannot be read: ENOENT/],
      [issuer('g', { kind: 'jwks-file', file: join(dir, 'rsa.pem') }, { algorithms: ['ES256'] }), /JWKS file .* cannot be used/],
      [issuer('i', { kind: 'jwks', url: 'not a url', cacheMaxAgeMs: 1000, cooldownMs: 1000 }), /JWKS settings cannot be used/],
    ];
    for (const [spec, message] of cases) {
      await assert.rejects(JwtVerifier.create([spec], { loadSecret }), (err) => isBerthError(err, 'BERTH_ERR_AUTH_CONFIG') && err.message.startsWith(`auth.jwt.${spec.name}:`) && message.test(err.message), spec.name);
    }
    const short = (): Promise<Buffer> => Promise.resolve(Buffer.from('short'));
    await assert.rejects(JwtVerifier.create([issuer('h', secret, { algorithms: ['HS256'] })], { loadSecret: short }), /holds 5 bytes; an HMAC secret needs at least 32/);
  });

  it('re-reads-a-jwks-file-when-it-changes-at-most-once-a-second', async () => {
    const fileClock = new FakeClock(NOW_S * 1000);
    const file = join(dir, 'rotating.json');
    const jwk = async (pair: KeyPair, kid: string): Promise<JWK> => ({ ...(await exportJWK(pair.publicKey)), kid, alg: 'ES256' });
    const second = await generateKeyPair('ES256');
    await writeFile(file, JSON.stringify({ keys: [await jwk(ec, 'one')] }));
    const errors: unknown[] = [];
    const files = await JwtVerifier.create([issuer('f', { kind: 'jwks-file', file }, { algorithms: ['ES256'] })], { clock: fileClock, onError: (err) => errors.push(err) });
    const iss = 'https://f.example.com/';
    const one = await token(ec.privateKey, 'ES256', { iss }, { kid: 'one' });
    const two = await token(second.privateKey, 'ES256', { iss }, { kid: 'two' });
    assert.ok((await files.verify(one, ['f'])).ok);

    await writeFile(file, JSON.stringify({ keys: [await jwk(second, 'two')] }));
    await utimes(file, NOW_S + 5, NOW_S + 5);
    assert.equal(refused(await files.verify(two, ['f'])), 'unknown key id', 'not looked at again within the second');
    fileClock.advance(1000);
    assert.ok((await files.verify(two, ['f'])).ok, 'the new key, once a second has passed');
    assert.equal(refused(await files.verify(one, ['f'])), 'unknown key id', 'the old key is gone with the old file');

    await writeFile(file, 'not json');
    await utimes(file, NOW_S + 9, NOW_S + 9);
    fileClock.advance(1000);
    assert.ok((await files.verify(two, ['f'])).ok, 'a file that stops reading keeps the keys it had');
    assert.equal(errors.length, 1);
    assert.match(String((errors[0] as Error).message), /cannot be re-read; its previous keys stay in use/);
    files.close();
  });

  it('reads-a-bearer-header', () => {
    assert.equal(bearerToken('Bearer a.b.c'), 'a.b.c');
    assert.equal(bearerToken('bEaReR   eyJ.x-_.y  '), 'eyJ.x-_.y');
    assert.equal(bearerToken('Bearer'), undefined);
    assert.equal(bearerToken('Bearer a b'), undefined);
    assert.equal(bearerToken('Basic abc'), undefined);
    assert.equal(bearerToken(undefined), undefined);
  });
});

/** A JWKS over HTTP on port 0: the keys it serves can be swapped, and its fetches are counted. */
async function jwksServer(): Promise<{ url: string; keys: JWK[]; fetches: () => number; close: () => Promise<void> }> {
  let fetches = 0;
  const state = { keys: [] as JWK[] };
  const server: Server = createServer((_req, res) => {
    fetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get keys() {
      return state.keys;
    },
    set keys(keys: JWK[]) {
      state.keys = keys;
    },
    fetches: () => fetches,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

describe('JWT verification against a JWKS over HTTP', () => {
  const iss = 'https://remote.example.com/';
  const clock = new FakeClock(NOW_S * 1000);
  let first: KeyPair;
  let second: KeyPair;
  let jwk1: JWK;
  let jwk2: JWK;

  before(async () => {
    first = await generateKeyPair('RS256');
    second = await generateKeyPair('RS256');
    jwk1 = { ...(await exportJWK(first.publicKey)), kid: 'k1', alg: 'RS256' };
    jwk2 = { ...(await exportJWK(second.publicKey)), kid: 'k2', alg: 'RS256' };
  });

  it('caches-the-jwks-and-accepts-a-rotated-key-after-refetching-on-its-unknown-kid', async () => {
    const server = await jwksServer();
    try {
      server.keys = [jwk1];
      const remote = await JwtVerifier.create([issuer('remote', { kind: 'jwks', url: server.url, cacheMaxAgeMs: 600_000, cooldownMs: 0 }, { issuer: iss })], { clock });
      assert.equal(server.fetches(), 0, 'nothing fetched before a token needs it');
      const old = await token(first.privateKey, 'RS256', { iss }, { kid: 'k1' });
      assert.ok((await remote.verify(old, ['remote'])).ok);
      assert.ok((await remote.verify(old, ['remote'])).ok);
      assert.equal(server.fetches(), 1, 'cached: one fetch for two tokens');

      server.keys = [jwk1, jwk2];
      const rotated = await token(second.privateKey, 'RS256', { iss }, { kid: 'k2' });
      const check = await remote.verify(rotated, ['remote']);
      assert.ok(check.ok, check.ok ? '' : check.reason);
      assert.equal(server.fetches(), 2, 'the unknown kid made it fetch again, without a restart');

      server.keys = [jwk2];
      const unknown = await token(first.privateKey, 'RS256', { iss }, { kid: 'k9' });
      assert.equal(refused(await remote.verify(unknown, ['remote'])), 'unknown key id');
      assert.equal(server.fetches(), 3, 'refetched once for the unknown kid, still unknown: refused');
      remote.close();
    } finally {
      await server.close();
    }
  });

  it('does-not-refetch-for-an-unknown-kid-within-the-cooldown', async () => {
    const server = await jwksServer();
    try {
      server.keys = [jwk1];
      const remote = await JwtVerifier.create([issuer('remote', { kind: 'jwks', url: server.url, cacheMaxAgeMs: 600_000, cooldownMs: 60_000 }, { issuer: iss })], { clock });
      assert.ok((await remote.verify(await token(first.privateKey, 'RS256', { iss }, { kid: 'k1' }), ['remote'])).ok);
      server.keys = [jwk2];
      const rotated = await token(second.privateKey, 'RS256', { iss }, { kid: 'k2' });
      for (let i = 0; i < 5; i++) assert.equal(refused(await remote.verify(rotated, ['remote'])), 'unknown key id');
      assert.equal(server.fetches(), 1, 'a flood of unknown kids makes no fetch within the cooldown');
    } finally {
      await server.close();
    }
  });

  it('refuses-with-the-issuer-named-when-its-jwks-cannot-be-fetched-and-reports-it', async () => {
    const server = await jwksServer();
    const url = server.url;
    await server.close();
    const problems: string[] = [];
    const remote = await JwtVerifier.create([issuer('remote', { kind: 'jwks', url, cacheMaxAgeMs: 600_000, cooldownMs: 0 }, { issuer: iss })], { clock, onError: (_err, name) => problems.push(name) });
    const check = await remote.verify(await token(first.privateKey, 'RS256', { iss }, { kid: 'k1' }), ['remote']);
    assert.equal(refused(check), 'the keys of issuer remote are unavailable');
    assert.deepEqual(problems, ['remote']);
  });
});
