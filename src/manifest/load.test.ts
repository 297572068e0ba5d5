import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { BerthError, type ErrorDetail } from '../errors.js';
import { formatManifestError, loadManifest, parseManifest } from './load.js';
import { NO_ISOLATION, versionsOf, type NodeSpec, type VersionSpec } from './types.js';

const FILE = '/srv/shop/berth.yaml';

/** The manifest of DESIGN.md's contract, verbatim. */
const CONTRACT = `gateway:
  listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:8081
dataDir: .berth
groups:
  payments:
    endpoint: /payments            # or { host: payments.example.com } or { port: 9001 }
    services:
      charges:
        command: node charges.js
        replicas: 3
        health: { http: /health, interval: 1s, timeout: 500ms, healthyThreshold: 1, unhealthyThreshold: 2 }
        restart: always
        stable: "1.0.0"
        versions:
          "1.0.0": {}
          "2.0.0": { command: node charges-v2.js, replicas: 1 }
  users:
    endpoint: /users
    services:
      profiles:
        command: node profiles.js
        replicas: 2
        health: { http: /health }
`;

function minimal(service: string, extra = ''): string {
  return `${extra}groups:\n  shop:\n    services:\n      web:\n${service
    .split('\n')
    .map((l) => `        ${l}`)
    .join('\n')}\n`;
}

function problemsOf(text: string, code: BerthError['code'] = 'BERTH_ERR_MANIFEST_INVALID'): readonly ErrorDetail[] {
  try {
    parseManifest(text, FILE);
  } catch (err) {
    assert.ok(err instanceof BerthError, String(err));
    assert.equal(err.code, code, formatManifestError(err));
    return err.details;
  }
  assert.fail('expected the manifest to be refused');
}

/** `[line, dotted.path]` of a detail's `where`. */
function at(detail: ErrorDetail | undefined): [number, string] {
  const m = /^\/srv\/shop\/berth\.yaml:(\d+):(\d+)(?: (.*))?$/.exec(detail?.where ?? '');
  assert.ok(m, `unexpected where: ${detail?.where}`);
  return [Number(m[1]), m[3] ?? ''];
}

function version(spec: NodeSpec, key: string): VersionSpec {
  const found = versionsOf(spec).find((v) => v.key === key);
  assert.ok(found, `no version ${key}`);
  return found;
}

describe('parseManifest: the contract manifest', () => {
  const spec = parseManifest(CONTRACT, FILE);

  it('resolves-paths-from-the-manifest-folder', () => {
    assert.equal(spec.file, FILE);
    assert.equal(spec.dir, '/srv/shop');
    assert.equal(spec.dataDir, '/srv/shop/.berth');
    assert.deepEqual(spec.gateway.listen, { host: '127.0.0.1', port: 8080 });
    assert.equal(spec.gateway.tls, null);
    assert.deepEqual(spec.admin, { listen: { host: '127.0.0.1', port: 8081 } });
  });

  it('lists-groups-services-and-versions-in-order', () => {
    assert.deepEqual(
      spec.groups.map((g) => [g.name, g.endpoint, g.services.map((s) => [s.name, s.stable, s.versions.map((v) => v.version)])]),
      [
        ['payments', { kind: 'path', prefix: '/payments' }, [['charges', '1.0.0', ['1.0.0', '2.0.0']]]],
        ['users', { kind: 'path', prefix: '/users' }, [['profiles', '0.0.0', ['0.0.0']]]],
      ],
    );
  });

  it('gives-charges-1.0.0-as-stable-with-3-replicas-and-2.0.0-its-own-command-and-1-replica', () => {
    const v1 = version(spec, 'payments/charges@1.0.0');
    const v2 = version(spec, 'payments/charges@2.0.0');
    assert.equal(v1.stable, true);
    assert.equal(v1.replicas, 3);
    assert.deepEqual(v1.command, { line: 'node charges.js', file: 'node', args: ['charges.js'], shell: false });
    assert.equal(v2.stable, false);
    assert.equal(v2.replicas, 1);
    assert.deepEqual(v2.command, { line: 'node charges-v2.js', file: 'node', args: ['charges-v2.js'], shell: false });
    assert.equal(v2.cwd, '/srv/shop');
  });

  it('converts-health-durations-to-milliseconds-and-versions-inherit-them', () => {
    const expected = {
      check: { kind: 'http', path: '/health', method: 'GET', headers: {} },
      intervalMs: 1000,
      timeoutMs: 500,
      healthyThreshold: 1,
      unhealthyThreshold: 2,
      startPeriodMs: 10_000,
      restartAfterMs: 30_000,
    };
    assert.deepEqual(version(spec, 'payments/charges@1.0.0').health, expected);
    assert.deepEqual(version(spec, 'payments/charges@2.0.0').health, expected);
  });

  it('gives-profiles-version-0.0.0-stable-with-default-health-timings', () => {
    const profiles = version(spec, 'users/profiles@0.0.0');
    assert.equal(profiles.stable, true);
    assert.equal(profiles.replicas, 2);
    assert.equal(profiles.health.intervalMs, 5000);
    assert.equal(profiles.health.timeoutMs, 2000);
    assert.deepEqual(profiles.health.check, { kind: 'http', path: '/health', method: 'GET', headers: {} });
  });
});

describe('parseManifest: defaults', () => {
  it('fills-every-default-for-a-minimal-manifest', () => {
    const spec = parseManifest(minimal('command: ./web'), FILE);
    assert.equal(spec.nodeName, hostname());
    assert.deepEqual(spec.gateway.listen, { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(spec.admin.listen, { host: '127.0.0.1', port: 8081 });
    assert.equal(spec.dataDir, '/srv/shop/.berth');
    assert.equal(spec.instanceHost, '127.0.0.1');
    assert.equal(spec.logLevel, 'info');
    assert.deepEqual(spec.groups[0]?.endpoint, { kind: 'path', prefix: '/shop' });
    assert.deepEqual(version(spec, 'shop/web@0.0.0'), {
      key: 'shop/web@0.0.0',
      group: 'shop',
      service: 'web',
      version: '0.0.0',
      stable: true,
      command: { line: './web', file: './web', args: [], shell: false },
      cwd: '/srv/shop',
      env: {},
      secretEnv: {},
      isolation: NO_ISOLATION,
      replicas: 1,
      health: { check: { kind: 'tcp' }, intervalMs: 5000, timeoutMs: 2000, healthyThreshold: 1, unhealthyThreshold: 3, startPeriodMs: 10_000, restartAfterMs: 30_000 },
      restart: { policy: 'always', backoffInitialMs: 100, backoffMaxMs: 15_000, backoffFactor: 1.5, stableAfterMs: 10_000, maxRestarts: 16 },
      stop: { signal: 'SIGTERM', drainTimeoutMs: 10_000, stopTimeoutMs: 10_000 },
    } satisfies VersionSpec);
  });

  it('reads-every-top-level-setting', () => {
    const spec = parseManifest(
      minimal('command: ./web', 'node: edge-1\ngateway: { listen: "[::1]:0" }\nadmin: { listen: 9091 }\ndataDir: /var/lib/berth\ninstanceHost: 127.0.0.2\nlog: { level: debug }\n'),
      FILE,
    );
    assert.equal(spec.nodeName, 'edge-1');
    assert.deepEqual(spec.gateway.listen, { host: '::1', port: 0 });
    assert.deepEqual(spec.admin.listen, { host: '127.0.0.1', port: 9091 });
    assert.equal(spec.dataDir, '/var/lib/berth');
    assert.equal(spec.instanceHost, '127.0.0.2');
    assert.equal(spec.logLevel, 'debug');
  });

  it('reads-log-redact-names-and-paths-and-refuses-malformed-ones', () => {
    assert.deepEqual(parseManifest(minimal('command: ./web'), FILE).logRedact, []);
    const spec = parseManifest(minimal('command: ./web', 'log:\n  redact:\n    - ssn\n    - x-session\n    - body.card.number\n    - headers["x-custom"]\n    - items[0].pin\n    - ssn\n'), FILE);
    assert.deepEqual(spec.logRedact, ['ssn', 'x-session', 'body.card.number', 'headers["x-custom"]', 'items[0].pin']);
    const details = problemsOf(minimal('command: ./web', 'log:\n  redact: ["*.ssn", "a..b", 3]\n'));
    assert.deepEqual(details.map((d) => at(d)[1]), ['log.redact[0]', 'log.redact[1]', 'log.redact[2]']);
    assert.match(details[0]?.message ?? '', /may not start with "\*"/);
    assert.match(details[1]?.message ?? '', /expected a field name such as apiKey, or a path/);
    assert.match(problemsOf(minimal('command: ./web', 'log: { redact: ssn }\n'))[0]?.message ?? '', /expected a list of field names or paths/);
  });

  it('sorts-versions-by-semver-and-defaults-stable-to-the-highest-release', () => {
    const spec = parseManifest(minimal('command: ./web\nversions:\n  "3.0.0-beta.1": {}\n  "1.10.0": {}\n  "1.2.0":\n  "1.9.0": {}'), FILE);
    const service = spec.groups[0]?.services[0];
    assert.deepEqual(service?.versions.map((v) => v.version), ['1.2.0', '1.9.0', '1.10.0', '3.0.0-beta.1']);
    assert.equal(service?.stable, '1.10.0');
    assert.deepEqual(service?.versions.filter((v) => v.stable).map((v) => v.key), ['shop/web@1.10.0']);
  });

  it('uses-version-when-there-are-no-versions', () => {
    const spec = parseManifest(minimal('command: ./web\nversion: 1.2.3'), FILE);
    assert.equal(version(spec, 'shop/web@1.2.3').stable, true);
  });

  it('merges-version-env-over-service-env-as-strings', () => {
    const spec = parseManifest(
      minimal('command: ./web\nenv: { A: one, B: 2, C: true }\nversions:\n  "1.0.0": {}\n  "2.0.0": { env: { B: "two", D: 4.5 }, cwd: v2, stopSignal: INT, drainTimeout: 1m30s, stopTimeout: 250 }'),
      FILE,
    );
    assert.deepEqual(version(spec, 'shop/web@1.0.0').env, { A: 'one', B: '2', C: 'true' });
    const v2 = version(spec, 'shop/web@2.0.0');
    assert.deepEqual(v2.env, { A: 'one', B: 'two', C: 'true', D: '4.5' });
    assert.equal(v2.cwd, '/srv/shop/v2');
    assert.deepEqual(v2.stop, { signal: 'SIGINT', drainTimeoutMs: 90_000, stopTimeoutMs: 250 });
  });

  it('runs-command-with-args-directly-and-a-version-args-reuse-the-service-command', () => {
    const spec = parseManifest(minimal('command: /usr/bin/python3\nargs: [app.py, --port, 8000]\nversions:\n  "1.0.0": {}\n  "2.0.0": { args: [app2.py] }\n  "3.0.0": { command: "node x.js | cat" }'), FILE);
    assert.deepEqual(version(spec, 'shop/web@1.0.0').command, { line: '/usr/bin/python3 app.py --port 8000', file: '/usr/bin/python3', args: ['app.py', '--port', '8000'], shell: false });
    assert.deepEqual(version(spec, 'shop/web@2.0.0').command.args, ['app2.py']);
    assert.deepEqual(version(spec, 'shop/web@3.0.0').command, { line: 'node x.js | cat', file: '/bin/sh', args: ['-c', 'node x.js | cat'], shell: true });
  });

  it('reads-every-kind-of-health-check', () => {
    const spec = parseManifest(
      minimal(
        'command: ./web\nhealth: { tcp: 9000, interval: 500 }\nversions:\n  "1.0.0": {}\n  "2.0.0": { health: false }\n  "3.0.0": { health: { command: "curl -f localhost" } }\n  "4.0.0": { health: { http: /ready, method: HEAD, headers: { X-Probe: 1 }, port: 9100, startPeriod: 0, restartAfter: 1m } }',
      ),
      FILE,
    );
    assert.deepEqual(version(spec, 'shop/web@1.0.0').health.check, { kind: 'tcp', port: 9000 });
    assert.equal(version(spec, 'shop/web@1.0.0').health.intervalMs, 500);
    assert.equal(version(spec, 'shop/web@1.0.0').health.timeoutMs, 500, 'the default timeout never exceeds the interval');
    assert.deepEqual(version(spec, 'shop/web@2.0.0').health.check, { kind: 'none' });
    assert.deepEqual(version(spec, 'shop/web@3.0.0').health.check, { kind: 'command', command: 'curl -f localhost' });
    const v4 = version(spec, 'shop/web@4.0.0').health;
    assert.deepEqual(v4.check, { kind: 'http', path: '/ready', method: 'HEAD', headers: { 'X-Probe': '1' }, port: 9100 });
    assert.equal(v4.startPeriodMs, 0);
    assert.equal(v4.restartAfterMs, 60_000);
    assert.equal(v4.intervalMs, 5000, 'a version health replaces the service health as a whole');
  });

  it('maps-restart-settings-to-the-restart-spec', () => {
    const spec = parseManifest(minimal('command: ./web\nrestart: { policy: on-failure, backoff: 1s, maxBackoff: 1m, factor: 2, stableAfter: 30s, maxRestarts: 5 }\nversions:\n  "1.0.0": {}\n  "2.0.0": { restart: never }'), FILE);
    assert.deepEqual(version(spec, 'shop/web@1.0.0').restart, { policy: 'on-failure', backoffInitialMs: 1000, backoffMaxMs: 60_000, backoffFactor: 2, stableAfterMs: 30_000, maxRestarts: 5 });
    assert.equal(version(spec, 'shop/web@2.0.0').restart.policy, 'never');
  });

  it('shares-settings-through-anchors-merge-keys-and-x-keys', () => {
    const spec = parseManifest(
      'x-defaults: &defaults\n  command: node app.js\n  replicas: 2\ngroups:\n  shop:\n    services:\n      a: *defaults\n      b: { <<: *defaults, replicas: 5 }\n',
      FILE,
    );
    assert.deepEqual(versionsOf(spec).map((v) => [v.key, v.command.line, v.replicas]), [
      ['shop/a@0.0.0', 'node app.js', 2],
      ['shop/b@0.0.0', 'node app.js', 5],
    ]);
  });

  it('reads-host-and-port-endpoints', () => {
    const spec = parseManifest(
      'groups:\n  a:\n    endpoint: { host: Pay.Example.com }\n    services: { s1: { command: x } }\n  b:\n    endpoint: { port: 9001 }\n    services: { s2: { command: x } }\n  c:\n    endpoint: { path: /c/ }\n    services: { s3: { command: x } }\n',
      FILE,
    );
    assert.deepEqual(spec.groups.map((g) => g.endpoint), [{ kind: 'host', host: 'pay.example.com' }, { kind: 'port', port: 9001 }, { kind: 'path', prefix: '/c' }]);
  });
});

describe('parseManifest: errors', () => {
  it('reports-five-different-mistakes-at-once-each-at-its-line', () => {
    const details = problemsOf(`groups:
  payments:
    services:
      charges:
        command: node charges.js
        replica: 3
        replicas: -1
        restart: sometimes
        stable: "3.0.0"
        health:
          http: /health
          interval: fast
        versions:
          "1.0.0": {}
          "2.0.0": { command: node charges-v2.js }
`);
    const p = 'groups.payments.services.charges';
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [6, `${p}.replica`, 'unknown key "replica" (did you mean "replicas"?)'],
        [7, `${p}.replicas`, 'expected an integer >= 0, got -1'],
        [8, `${p}.restart`, 'expected one of always | on-failure | never, got "sometimes"'],
        [9, `${p}.stable`, 'expected one of the versions 1.0.0 | 2.0.0, got "3.0.0"'],
        [12, `${p}.health.interval`, `expected a duration above zero such as 500ms, 1s or 1m30s, or a number of milliseconds, got "fast"`],
      ],
    );
    assert.match(details[0]?.where ?? '', /^\/srv\/shop\/berth\.yaml:6:9 /);
  });

  it('names-the-file-and-the-count-in-the-message', () => {
    try {
      parseManifest(minimal('command: x\nreplicas: many'), FILE);
      assert.fail('accepted');
    } catch (err) {
      assert.ok(err instanceof BerthError);
      assert.equal(err.code, 'BERTH_ERR_MANIFEST_INVALID');
      assert.equal(err.message, `${FILE}: 1 problem`);
    }
  });

  it('reports-yaml-syntax-errors-with-their-line', () => {
    const details = problemsOf('groups:\n  shop:\n    services: [a, b\n  other: 1\n', 'BERTH_ERR_MANIFEST_SYNTAX');
    assert.ok(details.length >= 1);
    assert.match(details[0]?.where ?? '', /^\/srv\/shop\/berth\.yaml:\d+:\d+$/);
    assert.match(details[0]?.message ?? '', /not valid YAML/);
  });

  it('reports-duplicate-keys-as-syntax-errors-at-the-second-key', () => {
    const details = problemsOf(minimal('command: x\nreplicas: 1\nreplicas: 2'), 'BERTH_ERR_MANIFEST_SYNTAX');
    assert.equal(details.length, 1);
    assert.equal(details[0]?.where, `${FILE}:7:9`);
    assert.match(details[0]?.message ?? '', /duplicate key "replicas"/);
  });

  it('refuses-tabs-and-several-documents', () => {
    assert.match(problemsOf('groups:\n\tshop: {}\n', 'BERTH_ERR_MANIFEST_SYNTAX')[0]?.message ?? '', /tab/i);
    assert.match(problemsOf('groups: {}\n---\ngroups: {}\n', 'BERTH_ERR_MANIFEST_SYNTAX')[0]?.message ?? '', /one YAML document/);
  });

  it('explains-an-empty-file-and-a-non-map-document', () => {
    for (const text of ['', '# nothing yet\n', '\n\n']) {
      const details = problemsOf(text);
      assert.equal(details.length, 1);
      assert.equal(details[0]?.where, `${FILE}:1:1`);
      assert.match(details[0]?.message ?? '', /the manifest is empty/);
    }
    assert.match(problemsOf('- a\n- b\n')[0]?.message ?? '', /expected a map with at least "groups".*got a list/);
  });

  it('requires-groups-and-services-pointing-at-the-map-that-lacks-them', () => {
    assert.deepEqual(at(problemsOf('node: x\n')[0]), [1, 'groups']);
    assert.match(problemsOf('node: x\n')[0]?.message ?? '', /^missing required key "groups"/);
    const details = problemsOf('groups:\n  shop:\n    endpoint: /shop\n');
    assert.deepEqual(at(details[0]), [2, 'groups.shop.services']);
    assert.match(details[0]?.message ?? '', /^missing required key "services"/);
    assert.match(problemsOf('groups: {}\n')[0]?.message ?? '', /expected at least one group/);
  });

  it('requires-a-command-unless-every-version-has-one', () => {
    const missing = problemsOf(minimal('replicas: 1'));
    assert.deepEqual(missing.map((d) => [...at(d), d.message]), [[4, 'groups.shop.services.web.command', 'missing required key "command" (expected a command line)']]);
    const partly = problemsOf(minimal('versions:\n  "1.0.0": { command: a }\n  "2.0.0": {}'));
    assert.equal(partly.length, 1);
    assert.match(partly[0]?.message ?? '', /"2\.0\.0" has none/);
    assert.doesNotThrow(() => parseManifest(minimal('versions:\n  "1.0.0": { command: a }\n  "2.0.0": { command: b }'), FILE));
  });

  it('refuses-a-service-name-used-in-two-groups', () => {
    const details = problemsOf('groups:\n  a:\n    services:\n      api: { command: x }\n  b:\n    services:\n      api: { command: y }\n');
    assert.deepEqual(details.map((d) => [...at(d), d.message]), [[7, 'groups.b.services.api', 'service name "api" is already used in group "a"; service names must be unique across groups']]);
  });

  it('refuses-reserved-and-malformed-env-names', () => {
    const details = problemsOf(minimal('command: x\nenv:\n  PORT: 80\n  BERTH_GROUP: g\n  1BAD: x\n  OK: [1]'));
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [7, 'groups.shop.services.web.env.PORT', '"PORT" is reserved: Berth sets PORT and BERTH_* in every instance\'s environment'],
        [8, 'groups.shop.services.web.env.BERTH_GROUP', '"BERTH_GROUP" is reserved: Berth sets PORT and BERTH_* in every instance\'s environment'],
        [9, 'groups.shop.services.web.env["1BAD"]', 'expected an environment variable name (letters, digits and "_", not starting with a digit), got "1BAD"'],
        [10, 'groups.shop.services.web.env.OK', 'expected a string, number or boolean, or a secret by reference: { secret: { env: NAME } } or { secret: { file: PATH } }, got a list'],
      ],
    );
  });

  it('refuses-bad-names-for-groups-and-services', () => {
    const details = problemsOf('groups:\n  Shop:\n    services:\n      web_api: { command: x }\n');
    assert.deepEqual(details.map((d) => at(d)), [[2, 'groups.Shop']]);
    assert.match(details[0]?.message ?? '', /expected a name of lowercase letters.*got "Shop"/);
    const inner = problemsOf('groups:\n  shop:\n    services:\n      web_api: { command: x }\n');
    assert.deepEqual(inner.map((d) => at(d)), [[4, 'groups.shop.services.web_api']]);
  });

  it('refuses-version-together-with-versions-and-bad-semver', () => {
    const details = problemsOf(minimal('command: x\nversion: 1.0.0\nversions:\n  "1.0": {}\n  "2.0.0": {}'));
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [6, 'groups.shop.services.web.version', '"version" and "versions" cannot both be set: use version for a single version, or versions for several'],
        [8, 'groups.shop.services.web.versions["1.0"]', 'expected a semver version such as "1.2.3" or "2.0.0-beta.1" (quoted), got "1.0"'],
      ],
    );
    assert.match(problemsOf(minimal('command: x\nversion: 1.0'))[0]?.message ?? '', /got 1$/);
  });

  it('refuses-a-stable-version-that-is-not-the-version', () => {
    assert.match(problemsOf(minimal('command: x\nversion: 1.0.0\nstable: "2.0.0"'))[0]?.message ?? '', /expected one of the versions 1\.0\.0, got "2\.0\.0"/);
  });

  it('refuses-groups-sharing-a-prefix-a-host-or-a-port', () => {
    const details = problemsOf(`gateway: { listen: 127.0.0.1:8080 }
groups:
  payments:
    services: { charges: { command: x } }
  billing:
    endpoint: /payments/
    services: { invoices: { command: x } }
  a:
    endpoint: { host: api.example.com }
    services: { s1: { command: x } }
  b:
    endpoint: { host: API.example.com }
    services: { s2: { command: x } }
  c:
    endpoint: { port: 9001 }
    services: { s3: { command: x } }
  d:
    endpoint: { port: 9001 }
    services: { s4: { command: x } }
  e:
    endpoint: { port: 8080 }
    services: { s5: { command: x } }
  f:
    endpoint: { port: 8081 }
    services: { s6: { command: x } }
`);
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [6, 'groups.billing.endpoint', 'path prefix "/payments" is already the endpoint of group "payments"; each group needs its own'],
        [12, 'groups.b.endpoint.host', 'host "api.example.com" is already the endpoint of group "a"; each group needs its own'],
        [18, 'groups.d.endpoint.port', 'port 9001 is already the endpoint of group "c"; each group needs its own'],
        [21, 'groups.e.endpoint.port', "port 8080 is the gateway's own port (gateway.listen); pick another"],
        [24, 'groups.f.endpoint.port', "port 8081 is the admin API's port (admin.listen); pick another"],
      ],
    );
  });

  it('sees-a-default-prefix-clash-with-an-explicit-one', () => {
    const details = problemsOf('groups:\n  users:\n    endpoint: /shop\n    services: { a: { command: x } }\n  shop:\n    services: { b: { command: x } }\n');
    assert.deepEqual(details.map((d) => [...at(d), d.message]), [[5, 'groups.shop.endpoint', 'path prefix "/shop" (the default for group "shop") is already the endpoint of group "users"; each group needs its own']]);
  });

  it('refuses-an-endpoint-map-with-none-or-several-kinds', () => {
    assert.match(problemsOf(minimal('command: x').replace('    services:', '    endpoint: {}\n    services:'))[0]?.message ?? '', /expected one of path, host or port/);
    assert.match(problemsOf(minimal('command: x').replace('    services:', '    endpoint: { path: /a, port: 9000 }\n    services:'))[0]?.message ?? '', /only one of path, host or port may be set, found path and port/);
  });

  it('refuses-gateway-and-admin-on-one-address-but-allows-port-0-twice', () => {
    const details = problemsOf(minimal('command: x', 'gateway: { listen: 127.0.0.1:9000 }\nadmin:\n  listen: 0.0.0.0:9000\n'));
    assert.deepEqual(at(details[0]), [3, 'admin.listen']);
    assert.match(details[0]?.message ?? '', /same address as the gateway/);
    assert.doesNotThrow(() => parseManifest(minimal('command: x', 'gateway: { listen: 127.0.0.1:0 }\nadmin: { listen: 127.0.0.1:0 }\n'), FILE));
    assert.match(problemsOf(minimal('command: x', 'gateway: { listen: "localhost" }\n'))[0]?.message ?? '', /expected a listen address/);
  });

  it('refuses-an-admin-api-beyond-loopback-unless-allow-remote-says-so', () => {
    const details = problemsOf(minimal('command: x', 'admin:\n  listen: 0.0.0.0:9091\n'));
    assert.deepEqual(at(details[0]), [2, 'admin.listen']);
    assert.match(details[0]?.message ?? '', /0\.0\.0\.0:9091, which other machines can reach.*admin\.allowRemote: true/);
    assert.equal(problemsOf(minimal('command: x', 'admin: { listen: "10.1.2.3:9091", allowRemote: false }\n')).length, 1);
    assert.doesNotThrow(() => parseManifest(minimal('command: x', 'admin: { listen: 0.0.0.0:9091, allowRemote: true }\n'), FILE));
    for (const listen of ['127.0.0.1:9091', '"[::1]:9091"', 'localhost:9091', '9091', '127.0.0.2:9091']) {
      assert.doesNotThrow(() => parseManifest(minimal('command: x', `admin: { listen: ${listen} }\n`), FILE), listen);
    }
    assert.match(problemsOf(minimal('command: x', 'admin: { allowRemote: yes }\n'))[0]?.message ?? '', /true or false/);
  });

  it('refuses-a-timeout-longer-than-the-interval', () => {
    const details = problemsOf(minimal('command: x\nhealth: { http: /h, interval: 1s, timeout: 2s }\nversions:\n  "1.0.0": { health: { tcp: true, timeout: 6s } }'));
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [6, 'groups.shop.services.web.health.timeout', 'expected a timeout no longer than the interval (1s), got "2s"'],
        [8, 'groups.shop.services.web.versions["1.0.0"].health.timeout', 'expected a timeout no longer than the interval (5s), got "6s"'],
      ],
    );
  });

  it('refuses-several-check-kinds-and-http-settings-on-other-checks', () => {
    const details = problemsOf(minimal('command: x\nhealth:\n  http: /h\n  tcp: true\nversions:\n  "1.0.0": { health: { tcp: 9000, port: 9001, method: GET } }'));
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [8, 'groups.shop.services.web.health.tcp', 'only one of http, tcp or command may be set, found http and tcp'],
        [10, 'groups.shop.services.web.versions["1.0.0"].health.port', '"port" applies only to http checks (for a tcp check on another port, write tcp: <port>)'],
        [10, 'groups.shop.services.web.versions["1.0.0"].health.method', '"method" applies only to http checks'],
      ],
    );
  });

  it('checks-the-shape-of-health-and-restart', () => {
    const details = problemsOf(minimal('command: x\nhealth: { http: health, tcp: false, healthyThreshold: 0, method: POST }\nrestart: { policy: sometimes, factor: 0.5, maxRestarts: 1.5, backoff: 1m }'));
    const messages = details.map((d) => `${at(d)[1].replace('groups.shop.services.web.', '')}: ${d.message}`);
    assert.deepEqual(messages, [
      'health.http: expected a URL path starting with "/" (no spaces, "?" or "#"), got "health"',
      'health.tcp: expected true, or a port number to probe (1-65535), got false',
      'health.healthyThreshold: expected an integer >= 1, got 0',
      'health.method: expected one of GET | HEAD, got "POST"',
      'restart.policy: expected one of always | on-failure | never, got "sometimes"',
      'restart.factor: expected a number >= 1, got 0.5',
      'restart.maxRestarts: expected an integer >= 0, got 1.5',
      'restart.backoff: expected backoff <= maxBackoff, got backoff 1m and maxBackoff 15s',
    ]);
  });

  it('suggests-the-closest-key-or-lists-the-known-ones', () => {
    const details = problemsOf(minimal('command: x\nhealht: false', 'gatway: { listen: 80 }\nfrobnicate: 1\n'));
    assert.deepEqual(
      details.map((d) => [...at(d), d.message]),
      [
        [1, 'gatway', 'unknown key "gatway" (did you mean "gateway"?)'],
        [2, 'frobnicate', 'unknown key "frobnicate" (expected one of node, gateway, admin, auth, dataDir, instanceHost, log, groups)'],
        [8, 'groups.shop.services.web.healht', 'unknown key "healht" (did you mean "health"?)'],
      ],
    );
  });

  it('refuses-wrong-types-with-what-was-found', () => {
    const details = problemsOf(minimal('command: [node, x]\nargs: node\nstopSignal: SIGNOPE\nreplicas:\ncwd: ""'));
    assert.deepEqual(
      details.map((d) => `${at(d)[1].replace('groups.shop.services.web.', '')}: ${d.message}`),
      [
        'command: expected a command line, got a list',
        'args: expected a list of arguments, got "node"',
        'stopSignal: expected a signal name such as SIGTERM, SIGINT, SIGQUIT or SIGHUP, got "SIGNOPE"',
        'replicas: expected an integer >= 0, got an empty value',
        'cwd: expected a folder path (relative to the manifest folder), got ""',
      ],
    );
  });

  it('refuses-lists-and-maps-used-as-keys', () => {
    const details = problemsOf('groups:\n  ? [a, b]\n  : 1\n');
    assert.deepEqual(details, [{ where: `${FILE}:2:5`, message: 'expected a plain key (a name), got a list or map used as a key' }]);
  });

  it('reports-rules-and-shape-problems-from-different-groups-together', () => {
    const details = problemsOf('groups:\n  a:\n    endpoint: 5\n    services: { api: { command: x, replicas: -2 } }\n  b:\n    services: { api: { command: y } }\n');
    assert.deepEqual(details.map((d) => at(d)[1]), ['groups.a.endpoint', 'groups.a.services.api.replicas', 'groups.b.services.api']);
  });

  it('refuses-an-unbalanced-command-line', () => {
    assert.deepEqual(
      problemsOf(minimal("command: node 'app.js")).map((d) => d.message),
      [`expected a command line, got "node 'app.js": unterminated single quote (')`],
    );
  });
});

describe('loadManifest', () => {
  it('reads-a-file-and-resolves-relative-to-its-folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-manifest-'));
    try {
      const file = join(dir, 'berth.yaml');
      await writeFile(file, minimal('command: node web.js\ncwd: ./svc'));
      const spec = await loadManifest(file);
      assert.equal(spec.file, file);
      assert.equal(spec.dataDir, join(dir, '.berth'));
      assert.equal(version(spec, 'shop/web@0.0.0').cwd, join(dir, 'svc'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names-the-path-of-a-missing-file', async () => {
    const file = join(tmpdir(), 'berth-no-such-dir', 'berth.yaml');
    await assert.rejects(loadManifest(file), (err: unknown) => {
      assert.ok(err instanceof BerthError);
      assert.equal(err.code, 'BERTH_ERR_MANIFEST_NOT_FOUND');
      assert.equal(err.message, `${file}: cannot read the manifest: no such file`);
      return true;
    });
  });

  it('names-a-folder-given-instead-of-a-file', async () => {
    await assert.rejects(loadManifest(tmpdir()), /is a folder/);
  });
});

describe('formatManifestError', () => {
  it('prints-the-message-then-one-line-per-problem-relative-to-cwd', () => {
    const file = join(process.cwd(), 'examples', 'berth.yaml');
    let err: unknown;
    try {
      parseManifest(minimal('command: x\nreplicas: three\nrestart: sometimes'), file);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof BerthError);
    const rel = relative(process.cwd(), file);
    assert.equal(
      formatManifestError(err),
      [
        `${rel}: 2 problems`,
        `  ${rel}:6:9  groups.shop.services.web.replicas: expected an integer >= 0, got "three"`,
        `  ${rel}:7:9  groups.shop.services.web.restart: expected one of always | on-failure | never, got "sometimes"`,
      ].join('\n'),
    );
  });

  it('keeps-an-absolute-path-when-it-is-shorter', () => {
    const err = new BerthError('BERTH_ERR_MANIFEST_INVALID', '/b.yaml: 1 problem', { details: [{ where: '/b.yaml:1:1 groups', message: 'missing' }] });
    const out = formatManifestError(err);
    assert.equal(out, process.cwd() === '/' ? 'b.yaml: 1 problem\n  b.yaml:1:1  groups: missing' : '/b.yaml: 1 problem\n  /b.yaml:1:1  groups: missing');
  });
});

describe('parseManifest: robustness', () => {
  it('answers-any-document-with-a-node-spec-or-a-berth-error-never-a-crash', () => {
    const key = fc.constantFrom('groups', 'services', 'command', 'replicas', 'health', 'http', 'tcp', 'versions', '1.0.0', 'endpoint', 'port', 'env', 'PORT', 'restart', 'stable', 'web', 'x-a');
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), fc.integer({ min: -5, max: 70000 }), fc.constantFrom('1s', '/x', 'node a.js', 'always', '"'), fc.array(tie('node'), { maxLength: 3 }), fc.dictionary(key, tie('node'), { maxKeys: 4 })),
    })).node;
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 4 }), (doc) => {
        try {
          parseManifest(stringify(doc), FILE);
        } catch (err) {
          assert.ok(err instanceof BerthError, String(err));
          assert.ok(err.details.length > 0);
          for (const d of err.details) assert.match(d.where ?? '', /^\/srv\/shop\/berth\.yaml:\d+:\d+/);
        }
      }),
      { numRuns: 300 },
    );
  });
});
