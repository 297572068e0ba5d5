import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError, type ErrorDetail } from '../errors.js';
import { formatManifestError, parseManifest } from './load.js';
import { DEFAULT_EDGE } from './policies.js';
import { DEFAULT_EDGE_SPEC } from './normalize.js';

const FILE = '/srv/shop/berth.yaml';

function problemsOf(text: string): readonly ErrorDetail[] {
  try {
    parseManifest(text, FILE);
  } catch (err) {
    assert.ok(err instanceof BerthError, String(err));
    assert.equal(err.code, 'BERTH_ERR_MANIFEST_INVALID', formatManifestError(err));
    return err.details;
  }
  assert.fail('expected the manifest to be refused');
}

/** Each problem as "dotted.path: message". */
function problems(text: string): string[] {
  return problemsOf(text).map((d) => `${/^\S+:\d+:\d+ (.*)$/.exec(d.where ?? '')?.[1] ?? d.where}: ${d.message}`.replace(/, got .*$/, ''));
}

const ISSUER = `auth:
  jwt:
    main:
      issuer: https://id.example.com
      audience: shop
      algorithms: [RS256]
      jwks: https://id.example.com/.well-known/jwks.json
`;

describe('manifest: edge security', () => {
  it('applies-safe-defaults-when-the-manifest-says-nothing', () => {
    const spec = parseManifest('groups:\n  shop:\n    services:\n      web: { command: ./web }\n', FILE);
    assert.deepEqual(spec.gateway.edge, DEFAULT_EDGE_SPEC);
    assert.equal(spec.gateway.tls, null);
    assert.deepEqual(spec.auth, { jwt: [], identityKey: null });
    const edge = spec.groups[0]?.services[0]?.policies.edge;
    assert.deepEqual(edge, DEFAULT_EDGE);
    assert.equal(edge?.auth, null);
    assert.deepEqual(edge?.rateLimit.perIp, { ratePerSecond: 200, burst: 400 });
    assert.equal(edge?.maxBodyBytes, 10 * 1024 * 1024);
  });

  it('reads-issuers-group-auth-service-overrides-and-routes', () => {
    const spec = parseManifest(
      `${ISSUER}gateway:
  trustedProxies: [10.0.0.0/8, "::1"]
  connections: { max: 500, perIp: 20, maxRequests: 100 }
  timeouts: { headers: 5s, request: 1m, idle: 30s, keepAlive: 2s }
  maxHeaderSize: 8KiB
  maxHeaders: 50
  tls:
    listen: 127.0.0.1:9443
    cert: tls/server.crt
    key: tls/server.key
    redirect: true
    hsts: { maxAge: 30d, includeSubDomains: true }
groups:
  payments:
    auth: { jwt: main }
    authorize:
      - { path: "/**", scopes: [payments] }
    rateLimit: { perIp: 100/s, perSubject: { rate: 1000/m, burst: 50 } }
    services:
      charges:
        command: ./charges
        auth: { apiKey: true }
        maxBody: 1MiB
        tls: { ca: tls/ca.crt, cert: tls/client.crt, key: tls/client.key, serverName: charges.internal }
        routes:
          - path: /public/**
            auth: false
            methods: [get, HEAD]
          - path: /admin/*
            authorize: [{ roles: [admin], methods: [POST] }]
            rateLimit: false
`,
      FILE,
    );
    assert.deepEqual(spec.auth.jwt, [
      {
        name: 'main',
        issuer: 'https://id.example.com',
        audience: ['shop'],
        algorithms: ['RS256'],
        keys: { kind: 'jwks', url: 'https://id.example.com/.well-known/jwks.json', cacheMaxAgeMs: 600_000, cooldownMs: 30_000 },
        clockSkewMs: 30_000,
        rolesClaim: 'roles',
        scopesClaim: 'scope',
      },
    ]);
    assert.deepEqual(spec.gateway.edge, {
      trustedProxies: ['10.0.0.0/8', '::1'],
      connections: { max: 500, perIp: 20, maxRequests: 100 },
      timeouts: { headersMs: 5_000, requestMs: 60_000, idleMs: 30_000, keepAliveMs: 2_000 },
      maxHeaderBytes: 8192,
      maxHeaders: 50,
    });
    assert.deepEqual(spec.gateway.tls, {
      listen: { host: '127.0.0.1', port: 9443 },
      certFile: '/srv/shop/tls/server.crt',
      keyFile: '/srv/shop/tls/server.key',
      minVersion: 'TLSv1.2',
      redirect: true,
      hsts: { maxAgeSeconds: 30 * 86_400, includeSubDomains: true, preload: false },
    });
    const charges = spec.groups[0]!.services[0]!;
    // The service's apiKey joins the group's jwt: merged key by key.
    assert.deepEqual(charges.policies.edge.auth, { jwt: ['main'], apiKey: true, anonymous: false });
    assert.deepEqual(charges.policies.edge.authorize, [{ methods: null, path: '/**', roles: null, scopes: ['payments'], claims: null, anonymous: false }]);
    assert.deepEqual(charges.policies.edge.rateLimit, { perIp: { ratePerSecond: 100, burst: 100 }, perSubject: { ratePerSecond: 1000 / 60, burst: 50 } });
    assert.equal(charges.policies.edge.maxBodyBytes, 1024 * 1024);
    assert.deepEqual(charges.upstreamTls, { caFile: '/srv/shop/tls/ca.crt', certFile: '/srv/shop/tls/client.crt', keyFile: '/srv/shop/tls/client.key', serverName: 'charges.internal', verify: true });
    const [open, admin] = charges.routes;
    assert.equal(open?.path, '/public/**');
    assert.equal(open?.edge.auth, null);
    assert.deepEqual(open?.edge.methods, ['GET', 'HEAD']);
    // A route inherits what it does not set from its service.
    assert.equal(open?.edge.maxBodyBytes, 1024 * 1024);
    assert.deepEqual(admin?.edge.auth, charges.policies.edge.auth);
    assert.deepEqual(admin?.edge.rateLimit, { perIp: null, perSubject: null });
    // The group's own policies, for services registered into it from outside.
    assert.deepEqual(spec.groups[0]!.policies.edge.auth, { jwt: ['main'], apiKey: false, anonymous: false });
  });

  it('refuses-auth-that-admits-nobody-or-names-an-unknown-issuer', () => {
    assert.deepEqual(
      problems(`${ISSUER}groups:
  shop:
    auth: { jwt: [main, other] }
    services:
      web: { command: ./web }
      api: { command: ./api, authorize: [] }
      ok: { command: ./ok, authorize: [{ path: "/**" }] }
`),
      [
        'groups.shop.auth.jwt: no issuer "other" under auth.jwt (expected one of main)',
        'groups.shop.services.web: authentication is required here but no authorize rule says who is admitted (default deny); add authorize rules to the group, the service or the route, such as authorize: [{ path: "/**" }] to admit every authenticated caller',
        'groups.shop.services.api: authentication is required here but the authorize list is empty, so no request would be admitted (default deny); add a rule, such as authorize: [{ path: "/**" }] to admit every authenticated caller',
      ],
    );
  });

  it('refuses-an-auth-with-no-way-in-and-rules-that-cannot-hold', () => {
    const found = problems(`groups:
  shop:
    services:
      web:
        command: ./web
        auth: { anonymous: true }
        authorize: [{ anonymous: true, roles: [admin] }]
        tls: { cert: client.crt }
`);
    assert.deepEqual(found.sort(), [
      'groups.shop.services.web.auth: expected jwt (issuer names) or apiKey: true here or in the group, or auth: false for none',
      'groups.shop.services.web.authorize[0].anonymous: an anonymous request has no roles: a rule that admits anonymous requests cannot require them',
      'groups.shop.services.web.tls.key: mutual TLS needs both cert and key',
    ]);
  });

  it('refuses-issuers-whose-algorithms-do-not-fit-their-keys', () => {
    const found = problems(`auth:
  jwt:
    a: { issuer: a, algorithms: [HS256], jwks: "https://a.example/jwks" }
    b: { issuer: b, algorithms: [RS256, HS256], secret: { env: B_SECRET } }
    c: { issuer: c, algorithms: [none] }
    d: { issuer: d, algorithms: [ES256], publicKey: k.pem, jwksFile: k.json }
    e: { issuer: e, algorithms: [HS512], secret: { env: E, file: e.key } }
groups:
  shop:
    services:
      web: { command: ./web }
`);
    assert.ok(found.includes('auth.jwt.c.algorithms[0]: expected one of HS256 | HS384 | HS512 | RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | ES512 | EdDSA | Ed25519'), found.join('\n'));
    assert.ok(found.includes('auth.jwt.a.algorithms: HS256 needs a shared secret (secret:), not jwks; an issuer\'s algorithms are all HMAC or all public-key'), found.join('\n'));
    assert.ok(found.includes('auth.jwt.b.algorithms: a secret verifies only HS256, HS384 or HS512'), found.join('\n'));
    assert.ok(found.includes('auth.jwt.c: missing the keys: expected one of jwks (a URL), jwksFile, publicKey (a PEM file) or secret (for HS256/384/512)'), found.join('\n'));
    assert.ok(found.includes('auth.jwt.d.publicKey: only one of jwks, jwksFile, publicKey or secret may be set, found jwksFile and publicKey'), found.join('\n'));
    assert.ok(found.includes('auth.jwt.e.secret: expected exactly one of env or file'), found.join('\n'));
  });

  it('names-bad-rates-sizes-ranges-methods-and-listeners', () => {
    const found = problems(`gateway:
  listen: 127.0.0.1:8080
  trustedProxies: [10.0.0.0/33, proxy.example.com]
  maxHeaderSize: 12 parsecs
  tls: { listen: 127.0.0.1:8080, cert: a.crt, key: a.key, minVersion: TLSv1.1 }
groups:
  shop:
    rateLimit: { perIp: fast }
    services:
      web: { command: ./web, maxBody: lots, methods: [], routes: [{ path: "no-slash" }] }
`);
    assert.deepEqual(found.sort(), [
      'gateway.maxHeaderSize: expected a size such as 512KiB, 10MiB or 1GiB, or a number of bytes (at least 1024 bytes)',
      'gateway.tls.listen: the HTTPS listener 127.0.0.1:8080 clashes with the gateway listener (127.0.0.1:8080); give it a port of its own',
      'gateway.tls.minVersion: expected one of TLSv1.2 | TLSv1.3',
      'gateway.trustedProxies[0]: expected an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8',
      'gateway.trustedProxies[1]: expected an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8',
      'groups.shop.rateLimit.perIp: expected a rate such as 100/s, 1000/m or 5/10s',
      'groups.shop.services.web.maxBody: expected a size such as 512KiB, 10MiB or 1GiB, or a number of bytes',
      'groups.shop.services.web.methods: expected a list of at least one HTTP method',
      'groups.shop.services.web.routes[0].path: expected a path glob starting with "/" (* matches one segment, ** any number)',
    ]);
  });
});

describe('manifest: isolation', () => {
  it('reads-user-resources-sandbox-and-secret-env-with-versions-overriding-the-service', () => {
    const spec = parseManifest(
      `groups:
  shop:
    services:
      web:
        command: ./web
        user: nobody
        resources: { memory: 128MiB, cpu: 0.5, pids: 64, openFiles: 1024 }
        sandbox: { writable: [cache] }
        env:
          PLAIN: 1
          DB_PASSWORD: { secret: { env: SHOP_DB_PASSWORD } }
          TLS_KEY: { secret: { file: secrets/tls.key } }
        versions:
          "1.0.0": {}
          "2.0.0": { user: "1001:1002", resources: { memory: 1GiB }, sandbox: false }
`,
      FILE,
    );
    const [v1, v2] = spec.groups[0]!.services[0]!.versions;
    assert.deepEqual(v1?.env, { PLAIN: '1' });
    assert.deepEqual(v1?.secretEnv, { DB_PASSWORD: { env: 'SHOP_DB_PASSWORD' }, TLS_KEY: { file: '/srv/shop/secrets/tls.key' } });
    assert.deepEqual(v1?.isolation, {
      user: { name: 'nobody' },
      resources: { memoryBytes: 128 * 1024 * 1024, cpu: 0.5, pids: 64, openFiles: 1024 },
      sandbox: { writable: ['/srv/shop/cache'] },
    });
    // A version's resources replace the service's as a whole, like health.
    assert.deepEqual(v2?.isolation, { user: { uid: 1001, gid: 1002 }, resources: { memoryBytes: 1024 ** 3, cpu: null, pids: null, openFiles: null }, sandbox: null });
  });

  it('refuses-root-bad-limits-and-secrets-given-two-ways', () => {
    const found = problems(`groups:
  shop:
    services:
      a: { command: ./a, user: root }
      b: { command: ./b, user: "0:0" }
      c: { command: ./c, resources: { memory: 1KiB, cpu: 0, pids: 0, swap: 1 } }
      d: { command: ./d, env: { K: { secret: { env: A, file: b } } } }
`);
    assert.deepEqual(found.sort(), [
      'groups.shop.services.a.user: expected an unprivileged user: a name such as nobody, "uid:gid" such as "1001:1001", or { uid, gid } (not root)',
      'groups.shop.services.b.user: expected an unprivileged user: a name such as nobody, "uid:gid" such as "1001:1001", or { uid, gid } (not root)',
      'groups.shop.services.c.resources.cpu: expected a number of cores above 0, such as 0.5 or 2',
      'groups.shop.services.c.resources.memory: expected a size such as 512KiB, 10MiB or 1GiB, or a number of bytes (at least 4194304 bytes)',
      'groups.shop.services.c.resources.pids: expected an integer >= 1',
      'groups.shop.services.c.resources.swap: unknown key "swap" (expected one of memory, cpu, pids, openFiles)',
      'groups.shop.services.d.env.K.secret: expected exactly one of env or file',
    ]);
  });
});
