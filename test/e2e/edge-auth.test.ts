/**
 * Authentication and authorization at the gateway on a real `berth up`: JWTs
 * checked against a JWKS the test serves (and rotates), API keys made and
 * revoked with the CLI, the signed identity an instance receives, and the
 * other edge policies of a route (methods, body size, rate per subject), over
 * real sockets, as a client and an operator would meet them.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { request } from 'undici';
import type { AuditEntry } from '../../src/admin/audit.js';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, makeProject, ROOT, runCli, testManifest, type LogLine } from '../support/node-process.js';

const ISSUER = 'https://issuer.e2e.test';
const AUDIENCE = 'berth-e2e';
const HEALTH = 'health: { http: /health, interval: 200ms, timeout: 150ms, startPeriod: 0s }';
/**
 * berth/client for the fixture's /identity. A manifest's `env` may not set
 * BERTH_* (Berth's own), so env(1) sets it: it execs node, keeping the pid.
 */
const WEB_WITH_CLIENT = `env BERTH_CLIENT=${join(ROOT, 'dist/src/client/index.js')} node web.mjs`;

/**
 * The manifest: group `api` needs a JWT of issuer `main` (or an API key) and
 * admits by scope, role, claim, method and path; its `site` service has an
 * anonymous GET-only route; group `open` has no authentication and a 1 KiB
 * body limit. `reportsScope` is what the reload test changes.
 */
function manifest(jwksUrl: string, reportsScope: string): string {
  return testManifest(`auth:
  jwt:
    main:
      issuer: ${ISSUER}
      audience: ${AUDIENCE}
      algorithms: [RS256, ES256]
      jwks: ${jwksUrl}
      # An unknown kid refetches the JWKS at once: the rotation test needs no wait.
      cooldown: 1ms
groups:
  api:
    auth: { jwt: main, apiKey: true }
    authorize:
      - { methods: [GET], path: "/orders/**", scopes: [orders.read] }
      - { methods: [POST], path: "/orders/**", scopes: [orders.write] }
      - { path: "/admin/**", roles: [admin] }
      - { methods: [GET], path: "/tenants/*/reports", claims: { tenant: acme } }
      - { methods: [GET], path: "/reports/**", scopes: [${reportsScope}] }
      - { methods: [GET], path: "/echo" }
      - { methods: [GET], path: "/identity/**" }
      - { methods: [GET], path: "/ws" }
      - { methods: [GET], path: "/limited/**" }
    services:
      web:
        command: "${WEB_WITH_CLIENT}"
        env: { LOG_REQUESTS: 1 }
        ${HEALTH}
        routes:
          - { path: "/limited/**", rateLimit: { perIp: false, perSubject: 5/10s } }
      site:
        command: node web.mjs
        ${HEALTH}
        routes:
          - { path: "/echo", auth: false, methods: [GET] }
  open:
    services:
      files:
        command: node web.mjs
        env: { LOG_REQUESTS: 1 }
        ${HEALTH}
        maxBody: 1KiB
`);
}

interface SigningKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(kid: string, alg: SigningKey['alg']): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

/** A JWKS document over HTTP on port 0, whose keys the test swaps; counts its fetches. */
class JwksServer {
  keys: SigningKey[];
  fetches = 0;
  readonly #server: Server;

  constructor(keys: SigningKey[]) {
    this.keys = keys;
    this.#server = createServer((req, res) => {
      if (req.url !== '/.well-known/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      this.fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: this.keys.map((k) => k.jwk) }));
    });
  }

  async start(): Promise<string> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/.well-known/jwks.json`;
  }

  async close(): Promise<void> {
    const closed = once(this.#server, 'close');
    this.#server.close();
    this.#server.closeAllConnections();
    await closed;
  }
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown>;
}

async function call(url: string, init: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  const res = await request(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, body: init.body ?? null });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

interface RawReply {
  status: number;
  /** Lower-case names. */
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes `raw` on a connection of its own and resolves with the first
 * response: its head alone for a 101, else head and body (Content-Length).
 * The socket is destroyed either way.
 */
function rawExchange(gateway: URL, raw: string | Buffer): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(gateway.port), gateway.hostname, () => socket.write(raw));
    let data = '';
    let settled = false;
    const settle = (reply: RawReply | Error): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (reply instanceof Error) reject(reply);
      else resolve(reply);
    };
    const parse = (complete: boolean): RawReply | undefined => {
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) return undefined;
      const [statusLine = '', ...lines] = data.slice(0, end).split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const body = data.slice(end + 4);
      if (status === 101) return { status, headers, body: '' };
      const length = headers['content-length'];
      if (length !== undefined && Buffer.byteLength(body, 'latin1') >= Number(length)) return { status, headers, body: body.slice(0, Number(length)) };
      return complete ? { status, headers, body } : undefined;
    };
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const reply = parse(false);
      if (reply) settle(reply);
    });
    // The gateway may close after a refusal while the rest of what was written is still unread: the answer is what counts.
    socket.on('error', (err) => settle(parse(true) ?? err));
    socket.on('close', () => settle(parse(true) ?? new Error(`connection closed before a response; got ${JSON.stringify(data)}`)));
  });
}

describe('authentication and authorization at the edge', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let jwks: JwksServer;
  let jwksUrl = '';
  let gw = '';
  let pid: number | undefined;
  const keys = {} as Record<'rsa' | 'ec' | 'retired' | 'next', SigningKey>;
  /** Every credential the test used: none may appear in the node's output. */
  const secrets = new Set<string>();
  /** What the CLI wrote to stderr (stdout is where it puts a new key's secret, on purpose). */
  const cliStderr: string[] = [];

  const sign = async (claims: JWTPayload, key: SigningKey = keys.rsa, audience = AUDIENCE): Promise<string> => {
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: key.alg, kid: key.kid })
      .setIssuer(ISSUER)
      .setAudience(audience)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(key.privateKey);
    secrets.add(token);
    // The signature alone is the part that must never leak.
    secrets.add(token.slice(token.lastIndexOf('.') + 1));
    return token;
  };
  const cli = async (args: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof runCli> => {
    const result = await runCli([...args, '-f', project.file], { env: { BERTH_TOKEN: '', BERTH_ADMIN: '', ...env } });
    cliStderr.push(result.stderr);
    return result;
  };
  const api = (path: string): string => `${gw}/api${path}`;
  /** The instance's own output lines, as the node collected them. */
  const printed = (text: string) => (l: LogLine) => l.event === 'instance.output' && l.msg === text;

  /** Subjects and their tokens, minted once the keys exist. */
  let alice = '';
  let aliceEc = '';
  let bob = '';
  let eve = '';
  let root = '';

  before(async () => {
    keys.rsa = await signingKey('rsa-1', 'RS256');
    keys.ec = await signingKey('ec-1', 'ES256');
    keys.retired = await signingKey('rsa-retired', 'RS256');
    keys.next = await signingKey('rsa-2', 'RS256');
    jwks = new JwksServer([keys.rsa, keys.ec, keys.retired]);
    jwksUrl = await jwks.start();
    project = await makeProject(manifest(jwksUrl, 'reports.read'));
    node = await BerthProcess.start(project.file);
    pid = node.child.pid;
    secrets.add(node.token);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 3);
    alice = await sign({ sub: 'alice', scope: 'orders.read reports.read', roles: ['staff'], tenant: 'acme' });
    aliceEc = await sign({ sub: 'alice', scope: 'orders.read reports.read', roles: ['staff'], tenant: 'acme' }, keys.ec);
    bob = await sign({ sub: 'bob', scope: 'orders.read orders.write' }, keys.ec);
    eve = await sign({ sub: 'eve', scope: 'profile', tenant: 'globex' });
    root = await sign({ sub: 'root', roles: ['admin', 'staff'] });
  });

  after(async () => {
    await node?.stop();
    await jwks?.close();
    await project?.cleanup();
  });

  it('admits-a-valid-rs256-or-es256-token-and-answers-401-with-a-challenge-without-one', async () => {
    for (const token of [alice, aliceEc]) {
      const ok = await call(api('/web/orders/1'), { headers: bearer(token) });
      assert.equal(ok.status, 200, JSON.stringify(ok.json));
      assert.equal(ok.json.path, '/orders/1');
    }
    const missing = await call(api('/web/orders/1'));
    assert.equal(missing.status, 401);
    assert.equal(missing.json.code, 'BERTH_ERR_UNAUTHENTICATED');
    // RFC 6750: no error attribute when no token was sent; the API key is offered too.
    assert.equal(missing.headers['www-authenticate'], 'Bearer realm="berth", ApiKey header="x-api-key"');

    const [head = '', payload = ''] = alice.split('.');
    const forged = `${head}.${Buffer.from(JSON.stringify({ ...decode(payload), scope: 'orders.read orders.write' })).toString('base64url')}.${alice.split('.')[2] ?? ''}`;
    const tampered = await call(api('/web/orders/1'), { headers: bearer(forged) });
    assert.equal(tampered.status, 401);
    assert.equal(tampered.json.message, 'signature invalid');
    assert.match(String(tampered.headers['www-authenticate']), /^Bearer realm="berth", error="invalid_token"/);

    const wrongAudience = await call(api('/web/orders/1'), { headers: bearer(await sign({ sub: 'alice', scope: 'orders.read' }, keys.rsa, 'someone-else')) });
    assert.equal(wrongAudience.status, 401);
    assert.equal(wrongAudience.json.message, 'audience not accepted');
  });

  it('refuses-a-token-lacking-the-scope-with-403', async () => {
    const refused = await call(api('/web/orders/1'), { headers: bearer(eve) });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.code, 'BERTH_ERR_FORBIDDEN');
    assert.equal(refused.json.message, 'GET /orders/1 needs the scopes orders.read');
  });

  it('applies-a-rule-for-post-only-to-posts', async () => {
    const readerPost = await call(api('/web/orders/1'), { method: 'POST', headers: bearer(alice), body: '{}' });
    assert.equal(readerPost.status, 403, 'orders.read does not admit a POST');
    assert.equal(readerPost.json.message, 'POST /orders/1 needs the scopes orders.write');
    const writerPost = await call(api('/web/orders/1'), { method: 'POST', headers: bearer(bob), body: '{}' });
    assert.equal(writerPost.status, 200, JSON.stringify(writerPost.json));
    assert.equal((await call(api('/web/orders/1'), { headers: bearer(bob) })).status, 200);
  });

  it('matches-rules-by-path-glob-role-and-claim', async () => {
    // `*` is one segment: the claim rule covers /tenants/acme/reports and nothing deeper.
    const own = await call(api('/web/tenants/acme/reports'), { headers: bearer(alice) });
    assert.equal(own.status, 200, JSON.stringify(own.json));
    assert.equal((await call(api('/web/tenants/globex/reports'), { headers: bearer(alice) })).status, 200, 'the glob matches any tenant segment; the claim decides');
    const otherTenant = await call(api('/web/tenants/acme/reports'), { headers: bearer(eve) });
    assert.equal(otherTenant.status, 403, 'tenant: globex is not acme');
    const deeper = await call(api('/web/tenants/acme/q1/reports'), { headers: bearer(alice) });
    assert.equal(deeper.status, 403);
    assert.equal(deeper.json.message, 'no authorize rule applies to GET /tenants/acme/q1/reports');

    assert.equal((await call(api('/web/admin/stats/today'), { headers: bearer(root) })).status, 200, '`**` reaches any depth');
    const notAdmin = await call(api('/web/admin/stats'), { headers: bearer(alice) });
    assert.equal(notAdmin.status, 403);
    assert.equal(notAdmin.json.message, 'GET /admin/stats needs one of the roles admin');
  });

  it('accepts-a-token-signed-with-a-rotated-in-key-without-a-restart', async () => {
    const retired = await sign({ sub: 'alice', scope: 'orders.read' }, keys.retired);
    const next = await sign({ sub: 'alice', scope: 'orders.read' }, keys.next);
    assert.equal((await call(api('/web/orders/1'), { headers: bearer(retired) })).status, 200);
    const early = await call(api('/web/orders/1'), { headers: bearer(next) });
    assert.equal(early.status, 401, 'a kid the issuer does not publish yet');
    assert.equal(early.json.message, 'unknown key id');

    const fetched = jwks.fetches;
    jwks.keys = [keys.rsa, keys.ec, keys.next];
    const rotated = await call(api('/web/orders/1'), { headers: bearer(next) });
    assert.equal(rotated.status, 200, JSON.stringify(rotated.json));
    assert.ok(jwks.fetches > fetched, 'the unknown kid made the node fetch the JWKS again');
    // The refetched set no longer holds the retired key.
    const gone = await call(api('/web/orders/1'), { headers: bearer(retired) });
    assert.equal(gone.status, 401);
    assert.equal(gone.json.message, 'unknown key id');
    assert.equal((await call(api('/web/orders/1'), { headers: bearer(alice) })).status, 200, 'keys still published keep working');
    assert.equal(node.child.pid, pid);
    assert.equal(node.logs.filter((l) => l.event === 'node.ready').length, 1, 'no restart');
  });

  it('admits-an-api-key-created-with-the-cli-for-its-group-only-until-revoked', async () => {
    const created = await cli(['apikey', 'create', 'batch', '--group', 'api', '--scope', 'orders.read']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    secrets.add(secret);
    assert.match(secret, /^bk_[A-Za-z0-9_-]{43}$/, 'the secret alone on stdout');
    const id = /id (key_[0-9a-f]{12})/.exec(created.stderr)?.[1];
    assert.ok(id, created.stderr);

    const ok = await call(api('/web/orders/7'), { headers: { 'x-api-key': secret } });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    const echo = await call(api('/web/echo'), { headers: { 'x-api-key': secret } });
    const seen = echo.json.headers as Record<string, string>;
    assert.deepEqual([seen['x-berth-auth'], seen['x-berth-subject'], seen['x-berth-scopes']], ['apikey', 'batch', 'orders.read']);
    assert.equal((await call(api('/web/admin/stats'), { headers: { 'x-api-key': secret } })).status, 403, 'the key has no admin role');

    const elsewhere = await cli(['apikey', 'create', 'other', '--group', 'open', '--scope', 'orders.read']);
    assert.equal(elsewhere.code, 0, elsewhere.stderr);
    const otherSecret = elsewhere.stdout.trim();
    secrets.add(otherSecret);
    const wrongGroup = await call(api('/web/orders/7'), { headers: { 'x-api-key': otherSecret } });
    assert.equal(wrongGroup.status, 403);
    assert.equal(wrongGroup.json.code, 'BERTH_ERR_FORBIDDEN');
    assert.equal(wrongGroup.json.message, 'this API key is not valid for group api');

    const revoked = await cli(['apikey', 'revoke', id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stdout, `revoked ${id}\n`);
    const afterRevoke = await call(api('/web/orders/7'), { headers: { 'x-api-key': secret } });
    assert.equal(afterRevoke.status, 401);
    assert.equal(afterRevoke.json.message, 'the API key is not valid (unknown or revoked)');
    const listed = await cli(['apikey', 'list', '--json']);
    assert.deepEqual((JSON.parse(listed.stdout) as { name: string }[]).map((k) => k.name), ['other']);
    assert.ok(!listed.stdout.includes('bk_'), 'no secret in the list');
  });

  it('refuses-a-viewer-creating-an-api-key-and-audits-the-refusal', async () => {
    const minted = await node.call('POST', '/v1/tokens', { name: 'watcher', role: 'viewer' });
    assert.equal(minted.status, 201);
    const viewer = String((minted.body as { token: string }).token);
    secrets.add(viewer);

    const refused = await node.call('POST', '/v1/apikeys', { name: 'sneaky', groups: ['api'] }, viewer);
    assert.equal(refused.status, 403);
    assert.equal((refused.body as { code: string }).code, 'BERTH_ERR_FORBIDDEN');
    const byCli = await cli(['apikey', 'create', 'sneaky-cli', '--group', 'api'], { BERTH_TOKEN: viewer });
    assert.equal(byCli.code, 6, byCli.stderr);

    const audit = await node.call('GET', '/v1/audit?limit=20');
    assert.equal(audit.status, 200);
    const entries = (audit.body as AuditEntry[]).filter((e) => e.route === '/v1/apikeys' && e.method === 'POST' && e.actor === 'watcher');
    assert.equal(entries.length, 2, JSON.stringify(audit.body));
    for (const entry of entries) assert.deepEqual([entry.role, entry.status], ['viewer', 403]);
    assert.ok(entries.some((e) => e.requestId === refused.headers['x-request-id']));
    const listed = await node.api<{ name: string }[]>('/v1/apikeys');
    assert.ok(!listed.some((k) => k.name.startsWith('sneaky')), 'no key was made');
  });

  it('tells-the-instance-who-called-with-signed-headers-it-can-verify', async () => {
    const echo = await call(api('/web/echo'), { headers: bearer(alice) });
    assert.equal(echo.status, 200);
    const seen = echo.json.headers as Record<string, string>;
    assert.equal(seen['x-berth-auth'], 'jwt');
    assert.equal(seen['x-berth-subject'], 'alice');
    assert.equal(seen['x-berth-issuer'], ISSUER);
    assert.equal(seen['x-berth-roles'], 'staff');
    assert.equal(seen['x-berth-scopes'], 'orders.read reports.read');
    assert.match(seen['x-berth-signature'] ?? '', /^v1=[A-Za-z0-9_-]{43}$/);

    const identity = await call(api('/web/identity/me?x=1'), { headers: bearer(alice) });
    assert.equal(identity.status, 200);
    const check = identity.json.check as { ok: boolean; reason?: string; identity?: { kind: string; subject: string; issuer: string; roles: string[]; scopes: string[] } };
    assert.equal(check.ok, true, check.reason);
    assert.deepEqual(check.identity, { kind: 'jwt', subject: 'alice', issuer: ISSUER, roles: ['staff'], scopes: ['orders.read', 'reports.read'], claims: {} });
  });

  it('never-lets-forged-identity-headers-reach-an-instance', async () => {
    const forged = {
      'x-berth-auth': 'apikey',
      'x-berth-subject': 'admin',
      'x-berth-roles': 'admin',
      'x-berth-scopes': 'everything',
      'x-berth-identity-time': String(Math.floor(Date.now() / 1000)),
      'x-berth-signature': `v1=${randomBytes(32).toString('base64url')}`,
      'X-Berth-Whatever': 'later-header',
    };
    // Authenticated: the client's copies are dropped, the gateway's take their place.
    const authed = await call(api('/web/echo'), { headers: { ...forged, ...bearer(alice) } });
    const seen = authed.json.headers as Record<string, string>;
    assert.deepEqual([seen['x-berth-auth'], seen['x-berth-subject'], seen['x-berth-roles'], seen['x-berth-scopes']], ['jwt', 'alice', 'staff', 'orders.read reports.read']);
    assert.notEqual(seen['x-berth-signature'], forged['x-berth-signature']);
    assert.equal(seen['x-berth-whatever'], undefined);
    const identity = await call(api('/web/identity'), { headers: { ...forged, ...bearer(alice) } });
    assert.equal((identity.json.check as { identity?: { subject: string } }).identity?.subject, 'alice');

    // Anonymous, on a route with auth: false and in a group without auth: no identity header at all.
    for (const url of [api('/site/echo'), `${gw}/open/files/echo`]) {
      const anonymous = await call(url, { headers: forged });
      assert.equal(anonymous.status, 200, url);
      const berth = Object.keys(anonymous.json.headers as Record<string, string>).filter((h) => h.startsWith('x-berth-'));
      assert.deepEqual(berth, ['x-berth-timeout-ms'], `${url}: only the gateway's deadline`);
    }
  });

  it('serves-an-anonymous-get-only-route-and-answers-405-with-allow-to-a-post', async () => {
    const got = await call(api('/site/echo'));
    assert.equal(got.status, 200);
    assert.equal(got.json.method, 'GET');
    const posted = await call(api('/site/echo'), { method: 'POST', body: 'x' });
    assert.equal(posted.status, 405);
    assert.equal(posted.json.code, 'BERTH_ERR_METHOD_NOT_ALLOWED');
    assert.equal(posted.headers.allow, 'GET');
    // A token does not open a method the route does not allow: methods come first.
    assert.equal((await call(api('/site/echo'), { method: 'POST', headers: bearer(root), body: 'x' })).status, 405);
    // The rest of the service is the group's: authenticated.
    assert.equal((await call(api('/site/other'))).status, 401);
  });

  it('refuses-a-declared-body-over-maxbody-with-413-before-the-instance-sees-it', async () => {
    const url = new URL(gw);
    const refused = await rawExchange(url, `POST /open/files/upload?n=too-big HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 2048\r\n\r\n${'a'.repeat(100)}`);
    assert.equal(refused.status, 413, refused.body);
    assert.equal((JSON.parse(refused.body) as { code: string }).code, 'BERTH_ERR_BODY_TOO_LARGE');
    assert.equal(refused.headers.connection, 'close', 'the unread body cannot be followed by another request');

    const within = await call(`${gw}/open/files/upload?n=within`, { method: 'POST', body: 'b'.repeat(1024) });
    assert.equal(within.status, 200);
    assert.equal(within.json.bytes, 1024, 'exactly the limit passes');
    // The instance prints each request as it arrives, in order: the later one is there, the refused one never was.
    await node.waitForLog(printed('received POST /upload?n=within'));
    assert.equal(node.logs.some((l) => l.event === 'instance.output' && String(l.msg).includes('n=too-big')), false);
  });

  it('cuts-a-chunked-body-over-maxbody-with-413', async () => {
    const url = new URL(gw);
    const chunk = `258\r\n${'c'.repeat(600)}\r\n`;
    const refused = await rawExchange(url, `POST /open/files/upload?n=chunked HTTP/1.1\r\nHost: ${url.host}\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}${chunk}0\r\n\r\n`);
    assert.equal(refused.status, 413, refused.body);
    assert.equal((JSON.parse(refused.body) as { code: string }).code, 'BERTH_ERR_BODY_TOO_LARGE');
    // Under the limit, chunked passes whole.
    const small = await rawExchange(url, `POST /open/files/upload?n=chunked-small HTTP/1.1\r\nHost: ${url.host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk}0\r\n\r\n`);
    assert.equal(small.status, 200, small.body);
    assert.equal((JSON.parse(small.body) as { bytes: number }).bytes, 600);
  });

  it('limits-each-subject-on-its-own-and-answers-429-with-rate-limit-headers', async () => {
    const carol = await sign({ sub: 'carol' });
    const dave = await sign({ sub: 'dave' });
    const statuses: number[] = [];
    let limited: Reply | undefined;
    for (let i = 0; i < 6; i++) {
      const r = await call(api(`/web/limited/${i}`), { headers: bearer(carol) });
      statuses.push(r.status);
      limited = r;
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
    assert.equal(limited?.json.code, 'BERTH_ERR_RATE_LIMITED');
    const retryAfter = Number(limited?.headers['retry-after']);
    // 5 per 10 s: a token every 2 s.
    assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${String(limited?.headers['retry-after'])}`);
    assert.equal(limited?.headers['ratelimit-limit'], '5');
    assert.equal(limited?.headers['ratelimit-remaining'], '0');
    assert.equal(limited?.headers['ratelimit-reset'], String(retryAfter));
    // Another subject has a bucket of its own; the same caller elsewhere in the service is not limited by this route.
    assert.equal((await call(api('/web/limited/0'), { headers: bearer(dave) })).status, 200);
    assert.equal((await call(api('/web/echo'), { headers: bearer(carol) })).status, 200);
  });

  it('refuses-a-websocket-upgrade-without-a-token-and-switches-protocols-with-one', async () => {
    const url = new URL(gw);
    const key = randomBytes(16).toString('base64');
    const upgrade = (extra: string): string =>
      `GET /api/web/ws HTTP/1.1\r\nHost: ${url.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n${extra}\r\n`;
    const refused = await rawExchange(url, upgrade(''));
    assert.equal(refused.status, 401);
    assert.equal((JSON.parse(refused.body) as { code: string }).code, 'BERTH_ERR_UNAUTHENTICATED');
    assert.match(refused.headers['www-authenticate'] ?? '', /^Bearer realm="berth"/);
    const forbidden = await rawExchange(url, upgrade(`Authorization: Bearer ${alice}\r\n`).replace('/api/web/ws', '/api/web/admin/ws'));
    assert.equal(forbidden.status, 403);

    const switched = await rawExchange(url, upgrade(`Authorization: Bearer ${alice}\r\n`));
    assert.equal(switched.status, 101);
    assert.equal(switched.headers['sec-websocket-accept'], createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64'));
    // The client left without a close frame (rawExchange closed its socket): the tunnel ends and the instance is no longer in flight.
    await untilIdle(node, 'web');
  });

  it('applies-new-authorize-rules-on-reload-without-a-restart', async () => {
    const before = (await node.instances()).map((r: InstanceRecord) => r.id).sort();
    assert.equal((await call(api('/web/reports/q1'), { headers: bearer(alice) })).status, 200);
    const reload = async (scope: string): Promise<void> => {
      await writeFile(project.file, manifest(jwksUrl, scope));
      const res = await node.call('POST', '/v1/reload');
      assert.equal(res.status, 200, JSON.stringify(res.body));
    };
    await reload('reports.admin');
    const refused = await call(api('/web/reports/q1'), { headers: bearer(alice) });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.message, 'GET /reports/q1 needs the scopes reports.admin');
    await reload('reports.read');
    assert.equal((await call(api('/web/reports/q1'), { headers: bearer(alice) })).status, 200);
    assert.equal(node.child.pid, pid);
    assert.deepEqual((await node.instances()).map((r) => r.id).sort(), before, 'no instance was restarted');
  });

  it('logs-the-subject-and-never-a-token-or-api-key', async () => {
    const access = await node.waitForLog((l) => l.event === 'access' && l.path === '/api/web/orders/1' && l.status === 200);
    assert.equal(access.subject, 'alice');
    const byKey = await node.waitForLog((l) => l.event === 'access' && l.path === '/api/web/orders/7' && l.status === 200);
    assert.equal(byKey.subject, 'batch');
    const anonymous = await node.waitForLog((l) => l.event === 'access' && l.path === '/api/web/orders/1' && l.status === 401);
    assert.equal('subject' in anonymous, false);
    // Refused after authentication, the caller is still named: who was forbidden, who was limited.
    const forbidden = await node.waitForLog((l) => l.event === 'access' && l.method === 'GET' && l.path === '/api/web/orders/1' && l.status === 403);
    assert.equal(forbidden.subject, 'eve');
    const limited = await node.waitForLog((l) => l.event === 'access' && l.path === '/api/web/limited/5' && l.status === 429);
    assert.equal(limited.subject, 'carol');

    // Every line the node will ever write: stop it first.
    await node.stop();
    assert.ok(secrets.size >= 10);
    assert.ok(node.stdout.length > 50, 'there was output to search');
    await node.assertNeverLogged(...secrets);
    for (const stderr of cliStderr) for (const secret of secrets) assert.ok(!stderr.includes(secret), 'a secret in the CLI\'s stderr');
  });
});

/** Resolves once no instance of `service` has a request or tunnel in flight; each round is an admin API round trip, no timer. */
async function untilIdle(node: BerthProcess, service: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const detail = await node.api<{ state: { instances: { id: string; inflight: number }[] } }>(`/v1/services/${service}`);
    const busy = detail.state.instances.filter((i) => i.inflight > 0);
    if (busy.length === 0) return;
    if (Date.now() > deadline) assert.fail(`still in flight after ${timeoutMs}ms: ${JSON.stringify(busy)}`);
  }
}

function decode(segment: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8')) as Record<string, unknown>;
}
