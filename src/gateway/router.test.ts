import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { InstanceRecord, InstanceStatus } from '../catalog/types.js';
import { instanceRecord } from '../testing/instance-record.js';
import type { GroupSpec, ServiceSpec, VersionSpec } from '../manifest/types.js';
import { compileRouteTable, type RouteTable } from './route-table.js';
import { matchRoute, type RouteRequest } from './router.js';
import type { Target } from './target.js';
import { DEFAULT_POLICIES } from '../manifest/policies.js';
import { FakeClock } from '../testing/fake-clock.js';
import { ServiceRuntime } from './service-runtime.js';

function service(group: string, name: string, versions: string[], stable = versions[0]!): ServiceSpec {
  return { group, name, stable, policies: DEFAULT_POLICIES, routes: [], upstreamTls: null, versions: versions.map((version) => ({ key: `${group}/${name}@${version}`, group, service: name, version }) as VersionSpec) };
}

const GROUPS: GroupSpec[] = [
  { name: 'payments', endpoint: { kind: 'path', prefix: '/payments' }, policies: DEFAULT_POLICIES, services: [service('payments', 'charges', ['1.0.0', '1.4.0', '2.0.0'], '1.0.0')] },
  { name: 'users', endpoint: { kind: 'path', prefix: '/api/users' }, policies: DEFAULT_POLICIES, services: [service('users', 'profiles', ['0.0.0'])] },
  { name: 'auth', endpoint: { kind: 'host', host: 'auth.example.com' }, policies: DEFAULT_POLICIES, services: [service('auth', 'tokens', ['1.0.0'])] },
  { name: 'storage', endpoint: { kind: 'port', port: 9001 }, policies: DEFAULT_POLICIES, services: [service('storage', 'blobs', ['1.0.0'])] },
];

let seq = 0;
function instance(group: string, svc: string, version: string, status: InstanceStatus = 'passing', fields: Partial<InstanceRecord> = {}): InstanceRecord {
  seq++;
  return instanceRecord({ id: `${svc}-${version}-${seq}`, node: 'n', group, service: svc, version, port: 10_000 + seq, pid: seq, status, ...fields });
}

function table(instances: InstanceRecord[], targets = new Map<string, Target>()): RouteTable {
  const runtimes = new Map<string, ServiceRuntime>();
  const events = { breaker: () => {}, outlier: () => {} };
  return compileRouteTable({
    groups: GROUPS,
    instances,
    targets,
    now: 0,
    runtimeOf: (spec) => {
      const key = `${spec.group}/${spec.name}`;
      const runtime = runtimes.get(key) ?? new ServiceRuntime(spec.group, spec.name, { ...spec.policies, outlier: null }, spec.routes, new FakeClock(), events);
      runtimes.set(key, runtime);
      return runtime;
    },
  });
}

const req = (url: string, extra: Partial<RouteRequest> = {}): RouteRequest => ({ url, host: 'localhost:8080', listenerPort: 8080, main: true, acceptVersion: undefined, ...extra });

describe('route table and router', () => {
  const all = [
    instance('payments', 'charges', '1.0.0'),
    instance('payments', 'charges', '1.0.0'),
    instance('payments', 'charges', '1.4.0'),
    instance('payments', 'charges', '2.0.0'),
    instance('users', 'profiles', '0.0.0'),
    instance('auth', 'tokens', '1.0.0'),
    instance('storage', 'blobs', '1.0.0'),
  ];
  const t = table(all);

  it('routes /<group>/<service>/<rest> to the stable version and strips the prefix', () => {
    const m = matchRoute(t, req('/payments/charges/x/y?z=1'));
    assert.ok(m.ok);
    assert.equal(m.version.version, '1.0.0');
    assert.equal(m.path, '/x/y?z=1');
    assert.equal(m.prefix, '/payments/charges');
  });

  it('routes the bare service path to /', () => {
    const m = matchRoute(t, req('/payments/charges'));
    assert.ok(m.ok);
    assert.equal(m.path, '/');
    const q = matchRoute(t, req('/payments/charges?a=b'));
    assert.ok(q.ok);
    assert.equal(q.path, '/?a=b');
  });

  it('selects a major version by path segment, the highest of that major', () => {
    const v1 = matchRoute(t, req('/payments/charges/v1/x'));
    assert.ok(v1.ok);
    assert.equal(v1.version.version, '1.4.0');
    assert.equal(v1.path, '/x');
    assert.equal(v1.prefix, '/payments/charges/v1');
    const v2 = matchRoute(t, req('/payments/charges/v2'));
    assert.ok(v2.ok);
    assert.equal(v2.version.version, '2.0.0');
    assert.equal(v2.path, '/');
    const none = matchRoute(t, req('/payments/charges/v7/x'));
    assert.ok(!none.ok);
    assert.equal(none.code, 'BERTH_ERR_NO_ROUTE');
  });

  it('does not take a segment that only starts like a version for one', () => {
    const m = matchRoute(t, req('/payments/charges/v2beta/x'));
    assert.ok(m.ok);
    assert.equal(m.version.version, '1.0.0');
    assert.equal(m.path, '/v2beta/x');
  });

  it('selects by Accept-Version range: the highest satisfying version with instances', () => {
    const pick = (range: string): string | undefined => {
      const m = matchRoute(t, req('/payments/charges/x', { acceptVersion: range }));
      return m.ok ? m.version.version : m.code;
    };
    assert.equal(pick('^2'), '2.0.0');
    assert.equal(pick('^1'), '1.4.0');
    assert.equal(pick('~1.0'), '1.0.0');
    assert.equal(pick('>=1.0.0 <1.2.0'), '1.0.0');
    assert.equal(pick('^3'), 'BERTH_ERR_NO_ROUTE');
    assert.equal(pick('not a range'), 'BERTH_ERR_BAD_VERSION');
  });

  it('matches the longest path prefix, on segment boundaries only', () => {
    const m = matchRoute(t, req('/api/users/profiles/me'));
    assert.ok(m.ok);
    assert.equal(m.group.name, 'users');
    assert.equal(m.path, '/me');
    const near = matchRoute(t, req('/paymentsX/charges'));
    assert.ok(!near.ok);
  });

  it('routes a host endpoint by Host header (case and port ignored)', () => {
    const m = matchRoute(t, req('/tokens/verify', { host: 'AUTH.example.com:8080' }));
    assert.ok(m.ok);
    assert.equal(m.service.service, 'tokens');
    assert.equal(m.path, '/verify');
    assert.equal(m.prefix, '/tokens');
  });

  it('routes a port endpoint only on that group listener', () => {
    const m = matchRoute(t, req('/blobs/a', { listenerPort: 9001, main: false }));
    assert.ok(m.ok);
    assert.equal(m.group.name, 'storage');
    assert.ok(!matchRoute(t, req('/storage/blobs/a')).ok);
  });

  it('answers no route for unknown groups and services', () => {
    const g = matchRoute(t, req('/nope/x'));
    assert.ok(!g.ok);
    assert.equal(g.code, 'BERTH_ERR_NO_ROUTE');
    const s = matchRoute(t, req('/payments/refunds/x'));
    assert.ok(!s.ok);
    assert.match(s.message, /no service "refunds"/);
  });

  it('routes only to passing instances: starting, warning, critical, draining and failed get nothing', () => {
    const mixed = table([
      instance('payments', 'charges', '1.0.0', 'starting'),
      instance('payments', 'charges', '1.0.0', 'warning'),
      instance('payments', 'charges', '1.0.0', 'critical'),
      instance('payments', 'charges', '1.0.0', 'draining'),
      instance('payments', 'charges', '1.0.0', 'failed'),
    ]);
    const m = matchRoute(mixed, req('/payments/charges/x'));
    assert.ok(m.ok);
    assert.equal(m.version.instances, 0);
    assert.equal(m.version.balancer.pick({ now: 0 }), undefined);
    assert.equal(mixed.instances, 0);
  });

  it('routes external instances registered under a service the manifest does not name', () => {
    const t2 = table([instance('payments', 'ledger', '3.1.0', 'passing', { source: 'external' })]);
    const m = matchRoute(t2, req('/payments/ledger/entries'));
    assert.ok(m.ok);
    assert.equal(m.version.version, '3.1.0');
  });

  it('keeps a target (and its in-flight count) across rebuilds while its instance stays', () => {
    const targets = new Map<string, Target>();
    const a = instance('payments', 'charges', '1.0.0');
    table([a], targets);
    const first = targets.get(a.id)!;
    first.acquire();
    table([a], targets);
    assert.equal(targets.get(a.id), first);
    // Gone from the catalog but still busy: kept until its last request ends.
    const t3 = table([], targets);
    assert.equal(targets.get(a.id), first);
    assert.ok(!t3.live.has(a.id));
    first.release();
    table([], targets);
    assert.equal(targets.has(a.id), false);
  });
});
