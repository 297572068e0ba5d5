import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { changedInstanceFields, formatPlan, isEmptyPlan, keepVersions, planChanges } from './diff.js';
import { parseManifest } from './load.js';
import { versionsOf, type NodeSpec } from './types.js';

const FILE = '/srv/shop/berth.yaml';

const BASE = `
node: shop-1
gateway: { listen: "127.0.0.1:8080" }
admin: { listen: "127.0.0.1:8081" }
groups:
  payments:
    endpoint: /payments
    services:
      charges:
        command: node charges.js
        replicas: 3
        env: { CURRENCY: EUR }
        health: { http: /health, interval: 1s }
        stable: "1.0.0"
        versions:
          "1.0.0": {}
          "2.0.0": { command: node charges-v2.js, replicas: 1 }
  users:
    services:
      profiles: { command: node profiles.js, replicas: 2 }
      legacy: { command: node legacy.js, version: "1.0.0" }
`;

function manifest(text: string): NodeSpec {
  return parseManifest(text, FILE);
}

/** BASE with each `[from, to]` text replacement applied (each must match). */
function edited(...edits: [string, string][]): NodeSpec {
  let text = BASE;
  for (const [from, to] of edits) {
    assert.ok(text.includes(from), `the base manifest contains ${JSON.stringify(from)}`);
    text = text.replace(from, to);
  }
  return manifest(text);
}

describe('planChanges', () => {
  const base = manifest(BASE);

  it('finds-no-changes-in-the-same-manifest', () => {
    const plan = planChanges(base, manifest(BASE));
    assert.ok(isEmptyPlan(plan));
    assert.equal(formatPlan(plan), 'no changes');
  });

  it('ignores-formatting-that-starts-the-same-process', () => {
    const plan = planChanges(base, edited(['command: node charges.js', 'command: "node   charges.js"']));
    assert.ok(isEmptyPlan(plan), formatPlan(plan));
  });

  it('scales-a-version-when-only-replicas-differ', () => {
    const plan = planChanges(base, edited(['replicas: 3', 'replicas: 5']));
    assert.deepEqual(plan.scaled, [{ key: 'payments/charges@1.0.0', group: 'payments', service: 'charges', version: '1.0.0', from: 3, to: 5 }]);
    assert.deepEqual(plan.replaced, []);
    assert.equal(formatPlan(plan), '~ payments/charges@1.0.0  replicas 3 → 5');
  });

  it('adds-and-removes-versions-with-their-instances', () => {
    const plan = planChanges(
      base,
      edited(['"2.0.0": { command: node charges-v2.js, replicas: 1 }', '"3.0.0": { replicas: 2 }'], ['      legacy: { command: node legacy.js, version: "1.0.0" }\n', '']),
    );
    assert.deepEqual(
      plan.added.map((v) => [v.key, v.replicas]),
      [['payments/charges@3.0.0', 2]],
    );
    assert.deepEqual(
      plan.removed.map((v) => [v.key, v.replicas]),
      [
        ['payments/charges@2.0.0', 1],
        ['users/legacy@1.0.0', 1],
      ],
    );
    assert.equal(
      formatPlan(plan),
      ['- payments/charges@2.0.0  1 instance', '+ payments/charges@3.0.0  2 instances', '- users/legacy@1.0.0  1 instance'].join('\n'),
    );
  });

  it('replaces-a-version-whose-instance-fields-differ-and-names-them', () => {
    const plan = planChanges(base, edited(['command: node charges.js', 'command: node charges.js --fast'], ['CURRENCY: EUR', 'CURRENCY: USD']));
    assert.deepEqual(
      plan.replaced.map((v) => [v.key, v.fields, v.from, v.to]),
      [
        ['payments/charges@1.0.0', ['command', 'env'], 3, 3],
        ['payments/charges@2.0.0', ['env'], 1, 1],
      ],
    );
    // 2.0.0 has its own command, so only its env changed.
    assert.equal(formatPlan(plan), '~ payments/charges@1.0.0  replace 3 instances (command, env)\n~ payments/charges@2.0.0  replace 1 instance (env)');
  });

  it('replaces-on-cwd-health-restart-and-stop-changes', () => {
    const changes: [string, [string, string]][] = [
      ['cwd', ['      profiles: { command: node profiles.js, replicas: 2 }', '      profiles: { command: node profiles.js, replicas: 2, cwd: ./users }']],
      ['health', ['      profiles: { command: node profiles.js, replicas: 2 }', '      profiles: { command: node profiles.js, replicas: 2, health: { http: /ready } }']],
      ['restart', ['      profiles: { command: node profiles.js, replicas: 2 }', '      profiles: { command: node profiles.js, replicas: 2, restart: never }']],
      ['stop', ['      profiles: { command: node profiles.js, replicas: 2 }', '      profiles: { command: node profiles.js, replicas: 2, stopTimeout: 3s }']],
    ];
    for (const [field, edit] of changes) {
      const plan = planChanges(base, edited(edit));
      assert.deepEqual(
        plan.replaced.map((v) => [v.key, v.fields]),
        [['users/profiles@0.0.0', [field]]],
        field,
      );
    }
  });

  it('replaces-and-rescales-in-one-change', () => {
    const plan = planChanges(base, edited(['      profiles: { command: node profiles.js, replicas: 2 }', '      profiles: { command: node profiles2.js, replicas: 4 }']));
    assert.deepEqual(plan.scaled, []);
    assert.equal(formatPlan(plan), '~ users/profiles@0.0.0  replace 2 instances (command), replicas 2 → 4');
  });

  it('reports-groups-added-removed-and-endpoint-changes', () => {
    const next = edited(
      ['    endpoint: /payments', '    endpoint: { host: pay.example.com }'],
      ['  users:\n    services:\n      profiles: { command: node profiles.js, replicas: 2 }\n      legacy: { command: node legacy.js, version: "1.0.0" }\n', '  search:\n    endpoint: { port: 9001 }\n    services:\n      index: { command: node index.js }\n'],
    );
    const plan = planChanges(base, next);
    assert.deepEqual(plan.groupsAdded, [{ group: 'search', endpoint: '{ port: 9001 }' }]);
    assert.deepEqual(plan.groupsRemoved, [{ group: 'users', endpoint: '/users' }]);
    assert.deepEqual(plan.endpoints, [{ group: 'payments', from: '/payments', to: '{ host: pay.example.com }' }]);
    assert.equal(
      formatPlan(plan),
      [
        '+ group search  endpoint { port: 9001 }',
        '- group users',
        '~ group payments  endpoint /payments → { host: pay.example.com }',
        '+ search/index@0.0.0  1 instance',
        '- users/legacy@1.0.0  1 instance',
        '- users/profiles@0.0.0  2 instances',
      ].join('\n'),
    );
    assert.deepEqual(plan.restartRequired, []);
  });

  it('reports-a-stable-version-change-without-replacing-instances', () => {
    const plan = planChanges(base, edited(['stable: "1.0.0"', 'stable: "2.0.0"']));
    assert.deepEqual(plan.stable, [{ group: 'payments', service: 'charges', from: '1.0.0', to: '2.0.0' }]);
    assert.deepEqual(plan.replaced, []);
    assert.deepEqual(plan.scaled, []);
    assert.equal(formatPlan(plan), '~ payments/charges  stable 1.0.0 → 2.0.0');
  });

  it('lists-each-changed-policy-setting-of-a-service-and-takes-it-live', () => {
    const plan = planChanges(base, edited(['        replicas: 3\n', '        replicas: 3\n        timeout: 10s\n        retries: { attempts: 3 }\n        breaker: { service: false }\n']));
    assert.deepEqual(plan.replaced, []);
    assert.deepEqual(
      plan.settings.map((s) => `${s.target} ${s.field}: ${s.from} → ${s.to}`),
      [
        'payments/charges breaker.service: on → off',
        'payments/charges retries.attempts: 2 → 3',
        'payments/charges timeout: 30s → 10s',
      ],
    );
  });

  it('takes-a-new-gateway-listener-live', () => {
    const plan = planChanges(base, edited(['gateway: { listen: "127.0.0.1:8080" }', 'gateway: { listen: "0.0.0.0:9090" }']));
    assert.deepEqual(plan.settings, [{ target: 'gateway', field: 'listen', from: '127.0.0.1:8080', to: '0.0.0.0:9090' }]);
    assert.deepEqual(plan.restartRequired, []);
    assert.equal(formatPlan(plan), '~ gateway  listen 127.0.0.1:8080 → 0.0.0.0:9090');
  });

  it('lists-node-settings-that-need-a-restart', () => {
    const next = edited(
      ['node: shop-1', 'node: shop-2\ndataDir: /var/berth\ninstanceHost: 127.0.0.2\nlog: { level: debug }'],
      ['admin: { listen: "127.0.0.1:8081" }', 'admin: { listen: "127.0.0.1:9091" }'],
    );
    const plan = planChanges(base, next);
    assert.deepEqual(plan.restartRequired, [
      { field: 'nodeName', from: 'shop-1', to: 'shop-2' },
      { field: 'dataDir', from: '.berth', to: '/var/berth' },
      { field: 'admin.listen', from: '127.0.0.1:8081', to: '127.0.0.1:9091' },
      { field: 'instanceHost', from: '127.0.0.1', to: '127.0.0.2' },
      { field: 'logLevel', from: 'info', to: 'debug' },
    ]);
    assert.match(formatPlan(plan), /^! dataDir \.berth → \/var\/berth {2}\(needs a restart\)$/m);
    assert.ok(!isEmptyPlan(plan));
  });

  it('needs-a-restart-for-a-changed-log-redact-list-the-logger-is-built-once', () => {
    const plan = planChanges(base, edited(['node: shop-1', 'node: shop-1\nlog: { redact: [ssn] }']));
    assert.deepEqual(plan.restartRequired, [{ field: 'logRedact', from: '[]', to: '["ssn"]' }]);
  });
});

describe('changedInstanceFields', () => {
  it('is-empty-for-a-version-that-only-scales', () => {
    const [a] = versionsOf(manifest(BASE));
    const [b] = versionsOf(edited(['replicas: 3', 'replicas: 9']));
    assert.ok(a && b);
    assert.deepEqual(changedInstanceFields(a, b), []);
  });
});

describe('keepVersions', () => {
  it('keeps-the-running-spec-of-versions-whose-rollout-failed', () => {
    const current = manifest(BASE);
    const next = edited(['CURRENCY: EUR', 'CURRENCY: USD'], ['replicas: 3', 'replicas: 4']);
    const kept = keepVersions(next, current, new Set(['payments/charges@1.0.0']));
    const plan = planChanges(kept, next);
    assert.deepEqual(
      plan.replaced.map((v) => [v.key, v.fields, v.from, v.to]),
      [['payments/charges@1.0.0', ['env'], 3, 4]],
    );
    // 2.0.0 rolled out: nothing left to do for it.
    assert.equal(versionsOf(kept).find((v) => v.key === 'payments/charges@2.0.0')?.env.CURRENCY, 'USD');
  });
});
