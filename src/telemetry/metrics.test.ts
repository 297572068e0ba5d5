import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Catalog } from '../catalog/catalog.js';
import { EmbeddedStore } from '../catalog/stores/embedded.js';
import { instanceRecord } from '../testing/instance-record.js';
import type { InstanceRecord } from '../catalog/types.js';
import type { RequestRecord } from '../gateway/observer.js';
import type { ResourcesSpec } from '../manifest/types.js';
import type { Usage, UsageSource } from '../supervisor/isolation/usage.js';
import { MetricNames } from './metric-names.js';
import { Metrics, REQUEST_DURATION_BUCKETS } from './metrics.js';

interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** The samples of one series name in Prometheus text format (`name` exactly, so `x_bucket` is not `x`). */
function samples(text: string, name: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    if (match[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const m of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
    out.push({ labels, value: Number(match[3]) });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels`; fails when there is not exactly one. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const found = samples(text, name).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(found.length, 1, `expected one ${name} ${JSON.stringify(labels)}, found ${JSON.stringify(found)}`);
  return found[0]!.value;
}

function request(fields: Partial<RequestRecord> = {}): RequestRecord {
  return {
    requestId: 'r1',
    method: 'GET',
    path: '/core/web/hello',
    group: 'core',
    service: 'web',
    version: '1.0.0',
    instance: 'web-1.0.0-aaaaa',
    status: 200,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 1,
    clientIp: '127.0.0.1',
    error: null,
    retries: 0,
    subject: null,
    ...fields,
  };
}

function record(id: string, fields: Partial<InstanceRecord> = {}): InstanceRecord {
  return instanceRecord({ id, status: 'starting', ...fields });
}

const emptyCatalog = { list: (): InstanceRecord[] => [] };

const PROMTOOL = '/usr/bin/promtool';

/** What `promtool check metrics` says of `text`, prom-client's own `berth_nodejs_*_total` gauges left out. */
async function promtoolProblems(text: string): Promise<string[]> {
  const promtool = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  promtool.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
  promtool.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<number | null>((resolve) => promtool.once('exit', resolve));
  promtool.stdin.end(text);
  await exited;
  return output.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('berth_nodejs_'));
}

function usageOf(fields: Partial<Usage>): Usage {
  return { at: '2024-01-01T00:00:05.000Z', cpuPercent: 12.5, cpuSeconds: 3, rssBytes: 48 * 1024 ** 2, openFds: 21, threads: 9, processes: 2, ...fields };
}

describe('Metrics', () => {
  it('serves Prometheus text format with its content type', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    assert.equal(metrics.contentType, 'text/plain; version=0.0.4; charset=utf-8');
    const text = await metrics.text();
    for (const def of Object.values(MetricNames)) assert.match(text, new RegExp(`^# TYPE ${def.name} `, 'm'), def.name);
    // prom-client's process metrics, under Berth's prefix.
    assert.ok(value(text, 'berth_process_cpu_seconds_total') >= 0);
    assert.match(text, /^# TYPE berth_nodejs_eventloop_lag_seconds gauge$/m);
  });

  it('counts finished requests by route and status class', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    for (const status of [200, 201, 204, 301, 404, 503, 502]) metrics.requestFinished(request({ status }));
    metrics.requestFinished(request({ version: '2.0.0', status: 200 }));
    const text = await metrics.text();
    const name = MetricNames.gatewayRequests.name;
    const route = { group: 'core', service: 'web', version: '1.0.0' };
    assert.equal(value(text, name, { ...route, code_class: '2xx' }), 3);
    assert.equal(value(text, name, { ...route, code_class: '3xx' }), 1);
    assert.equal(value(text, name, { ...route, code_class: '4xx' }), 1);
    assert.equal(value(text, name, { ...route, code_class: '5xx' }), 2);
    assert.equal(value(text, name, { version: '2.0.0', code_class: '2xx' }), 1);
    assert.equal(samples(text, name).length, 5, 'no series for a class never seen');
  });

  it('puts durations in cumulative buckets, in seconds', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    // 0.3 ms, exactly 1 ms (le is inclusive), 40 ms, 12 s (above every bound).
    for (const durationMs of [0.3, 1, 40, 12_000]) metrics.requestFinished(request({ durationMs }));
    const text = await metrics.text();
    const name = MetricNames.gatewayRequestDuration.name;
    const bucket = (le: string): number => value(text, `${name}_bucket`, { service: 'web', le });
    assert.equal(bucket('0.0005'), 1);
    assert.equal(bucket('0.001'), 2);
    assert.equal(bucket('0.025'), 2);
    assert.equal(bucket('0.05'), 3);
    assert.equal(bucket('10'), 3);
    assert.equal(bucket('+Inf'), 4);
    assert.equal(samples(text, `${name}_bucket`).length, REQUEST_DURATION_BUCKETS.length + 1);
    assert.equal(value(text, `${name}_count`, { service: 'web' }), 4);
    assert.ok(Math.abs(value(text, `${name}_sum`, { group: 'core', service: 'web', version: '1.0.0' }) - 12.0413) < 1e-9);
  });

  it('adds body bytes of every version of a service into one series', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    metrics.requestFinished(request({ bytesIn: 100, bytesOut: 1_000 }));
    metrics.requestFinished(request({ version: '2.0.0', bytesIn: 20, bytesOut: 300 }));
    metrics.requestFinished(request({ group: 'payments', service: 'charges', bytesIn: 1, bytesOut: 2 }));
    const text = await metrics.text();
    assert.equal(value(text, MetricNames.gatewayRequestBytes.name, { group: 'core', service: 'web' }), 120);
    assert.equal(value(text, MetricNames.gatewayResponseBytes.name, { group: 'core', service: 'web' }), 1_300);
    assert.equal(value(text, MetricNames.gatewayResponseBytes.name, { service: 'charges' }), 2);
    assert.ok(samples(text, MetricNames.gatewayRequestBytes.name).every((s) => !('version' in s.labels)));
  });

  it('tracks requests in flight', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    metrics.requestStarted();
    metrics.requestStarted();
    metrics.requestStarted();
    metrics.requestFinished(request());
    assert.equal(value(await metrics.text(), MetricNames.gatewayRequestsInFlight.name), 2);
    metrics.requestFinished(request());
    metrics.requestFinished(request());
    assert.equal(value(await metrics.text(), MetricNames.gatewayRequestsInFlight.name), 0);
  });

  it('counts upstream failures by route and kind, without the instance', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    const route = { group: 'core', service: 'web', version: '1.0.0' };
    metrics.upstreamFailed('connect', { ...route, instance: 'web-1.0.0-aaaaa' });
    metrics.upstreamFailed('connect', { ...route, instance: 'web-1.0.0-bbbbb' });
    metrics.upstreamFailed('reset', { ...route, instance: 'web-1.0.0-aaaaa' });
    const text = await metrics.text();
    const name = MetricNames.gatewayUpstreamFailures.name;
    assert.equal(value(text, name, { ...route, kind: 'connect' }), 2);
    assert.equal(value(text, name, { ...route, kind: 'reset' }), 1);
    assert.deepEqual(samples(text, name).map((s) => Object.keys(s.labels).sort()), [
      ['group', 'kind', 'service', 'version'],
      ['group', 'kind', 'service', 'version'],
    ]);
    // No request finished on that route yet: no empty histogram for it.
    assert.equal(samples(text, `${MetricNames.gatewayRequestDuration.name}_count`).length, 0);
  });

  it('records route table compiles', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    metrics.routeTableBuilt({ durationMs: 0.2, routes: 3, instances: 5 });
    metrics.routeTableBuilt({ durationMs: 4, routes: 4, instances: 6 });
    const text = await metrics.text();
    assert.equal(value(text, `${MetricNames.routeTableRebuild.name}_count`), 2);
    assert.equal(value(text, `${MetricNames.routeTableRebuild.name}_bucket`, { le: '0.00025' }), 1);
    assert.equal(value(text, MetricNames.routeTableRoutes.name), 4);
    assert.equal(value(text, MetricNames.routeTableInstances.name), 6);
  });

  it('gives every unrouted request one series per status class, whatever its path', async () => {
    const metrics = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    for (let i = 0; i < 500; i++) {
      metrics.requestFinished(request({ path: `/nowhere/${i}`, group: null, service: null, version: null, instance: null, status: 404, error: 'BERTH_ERR_NO_ROUTE' }));
    }
    // The router names the group (or service) a request got as far as; that is still no route.
    metrics.requestFinished(request({ path: '/core/nope', service: null, version: null, instance: null, status: 404 }));
    metrics.requestFinished(request({ path: '/core/web/v9/x', version: null, instance: null, status: 404 }));
    metrics.requestFinished(request({ path: '/x', group: null, service: null, version: null, instance: null, status: 502 }));
    const text = await metrics.text();
    const requests = samples(text, MetricNames.gatewayRequests.name);
    assert.deepEqual(requests, [
      { labels: { group: '', service: '', version: '', code_class: '4xx' }, value: 502 },
      { labels: { group: '', service: '', version: '', code_class: '5xx' }, value: 1 },
    ]);
    assert.equal(samples(text, `${MetricNames.gatewayRequestDuration.name}_count`).length, 1);
    assert.equal(samples(text, MetricNames.gatewayRequestBytes.name).length, 1);
  });

  it('keeps its series to itself: two instances share no registry', async () => {
    const a = new Metrics({ catalog: emptyCatalog, nodeName: 'node-a' });
    const b = new Metrics({ catalog: emptyCatalog, nodeName: 'node-b' });
    a.requestFinished(request());
    assert.equal(samples(await a.text(), MetricNames.gatewayRequests.name).length, 1);
    assert.equal(samples(await b.text(), MetricNames.gatewayRequests.name).length, 0);
  });

  it('follows the catalog: one status series per instance, up, restarts and counts by status', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-metrics-'));
    const store = await EmbeddedStore.open({ dir });
    const catalog = await Catalog.open(store);
    try {
      const metrics = new Metrics({ catalog, nodeName: 'node-a' });
      const id = 'web-1.0.0-aaaaa';
      const labels = { group: 'core', service: 'web', version: '1.0.0', instance: id, node: 'node-a' };
      await catalog.put(record(id));
      let text = await metrics.text();
      assert.deepEqual(samples(text, MetricNames.instanceStatus.name), [{ labels: { ...labels, status: 'starting' }, value: 1 }]);
      assert.deepEqual(samples(text, MetricNames.instanceUp.name), [{ labels, value: 0 }]);
      assert.equal(value(text, MetricNames.catalogInstances.name, { status: 'starting' }), 1);

      await catalog.put(record(id, { status: 'passing', restarts: 2 }));
      text = await metrics.text();
      // The old status' series is gone, not left at 0 beside the new one.
      assert.deepEqual(samples(text, MetricNames.instanceStatus.name), [{ labels: { ...labels, status: 'passing' }, value: 1 }]);
      assert.deepEqual(samples(text, MetricNames.instanceUp.name), [{ labels, value: 1 }]);
      assert.deepEqual(samples(text, MetricNames.instanceRestarts.name), [{ labels, value: 2 }]);
      assert.equal(value(text, MetricNames.catalogInstances.name, { status: 'starting' }), 0);
      assert.equal(value(text, MetricNames.catalogInstances.name, { status: 'passing' }), 1);

      // Another node's instance and this node's history count in the catalog, not as instances of this node.
      await catalog.put(record('web-1.0.0-bbbbb', { node: 'node-b', status: 'critical' }));
      await catalog.put(record('web-1.0.0-ccccc', { status: 'stopped', pid: null }));
      await catalog.put(record('web-1.0.0-ddddd', { status: 'failed', pid: null, restarts: 5 }));
      text = await metrics.text();
      assert.deepEqual(
        samples(text, MetricNames.instanceUp.name).map((s) => [s.labels.instance, s.value]),
        [
          [id, 1],
          ['web-1.0.0-ddddd', 0],
        ],
      );
      assert.equal(value(text, MetricNames.instanceStatus.name, { instance: 'web-1.0.0-ddddd' }), 1);
      assert.equal(value(text, MetricNames.instanceStatus.name, { status: 'failed' }), 1);
      assert.equal(value(text, MetricNames.instanceRestarts.name, { instance: 'web-1.0.0-ddddd' }), 5);
      const counts: Record<string, number> = Object.fromEntries(samples(text, MetricNames.catalogInstances.name).map((s) => [s.labels.status ?? '', s.value]));
      assert.deepEqual(counts, { starting: 0, passing: 1, warning: 0, critical: 1, draining: 0, stopped: 1, failed: 1 });

      await catalog.remove(id);
      text = await metrics.text();
      assert.equal(samples(text, MetricNames.instanceStatus.name).filter((s) => s.labels.instance === id).length, 0);
      assert.equal(value(text, MetricNames.catalogInstances.name, { status: 'passing' }), 0);
    } finally {
      await catalog.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('exports-usage-and-limits-per-instance-absent-when-unsampled-or-unlimited', async () => {
    const unlimited: ResourcesSpec = { memoryBytes: null, cpu: null, pids: null, openFiles: null };
    const usages = new Map<string, Usage>([
      ['web-1.0.0-aaaaa', usageOf({})],
      ['web-1.0.0-bbbbb', usageOf({ cpuPercent: null, openFds: null })],
      ['web-1.0.0-other', usageOf({})],
    ]);
    const limits = new Map<string, ResourcesSpec>([
      ['web-1.0.0-aaaaa', { memoryBytes: 128 * 1024 ** 2, cpu: 1.5, pids: 64, openFiles: 1024 }],
      ['web-1.0.0-bbbbb', unlimited],
    ]);
    const usage: UsageSource = { usage: (id) => usages.get(id), limits: (id) => limits.get(id) };
    const records = [
      record('web-1.0.0-aaaaa', { status: 'passing' }),
      record('web-1.0.0-bbbbb', { status: 'passing' }),
      // Not sampled yet: no usage series at all.
      record('web-1.0.0-ccccc', { status: 'starting' }),
      // Another node's: its own node exports it.
      record('web-1.0.0-other', { node: 'node-b' }),
    ];
    const metrics = new Metrics({ catalog: { list: () => records }, nodeName: 'node-a', usage });
    const text = await metrics.text();
    const labels = { group: 'core', service: 'web', version: '1.0.0', instance: 'web-1.0.0-aaaaa', node: 'node-a' };
    assert.deepEqual(samples(text, MetricNames.instanceCpuPercent.name), [{ labels, value: 12.5 }], 'no cpu before a second sample');
    assert.deepEqual(samples(text, MetricNames.instanceOpenFds.name), [{ labels, value: 21 }], 'no fds when they could not be read');
    assert.deepEqual(
      samples(text, MetricNames.instanceMemoryRss.name).map((s) => [s.labels.instance, s.value]),
      [
        ['web-1.0.0-aaaaa', 48 * 1024 ** 2],
        ['web-1.0.0-bbbbb', 48 * 1024 ** 2],
      ],
    );
    assert.equal(value(text, MetricNames.instanceThreads.name, { instance: 'web-1.0.0-bbbbb' }), 9);
    assert.equal(value(text, MetricNames.instanceProcesses.name, { instance: 'web-1.0.0-bbbbb' }), 2);
    assert.deepEqual(samples(text, MetricNames.instanceMemoryLimit.name), [{ labels, value: 128 * 1024 ** 2 }]);
    assert.deepEqual(samples(text, MetricNames.instanceCpuLimit.name), [{ labels, value: 1.5 }]);
    assert.deepEqual(samples(text, MetricNames.instancePidsLimit.name), [{ labels, value: 64 }]);

    // Computed at scrape time: a new sample shows at the next scrape.
    usages.set('web-1.0.0-aaaaa', usageOf({ cpuPercent: 150 }));
    assert.equal(value(await metrics.text(), MetricNames.instanceCpuPercent.name, { instance: 'web-1.0.0-aaaaa' }), 150);

    if (existsSync(PROMTOOL)) assert.deepEqual(await promtoolProblems(text), []);
  });

  it('exports-no-usage-series-without-a-usage-source', async () => {
    const metrics = new Metrics({ catalog: { list: () => [record('web-1.0.0-aaaaa')] }, nodeName: 'node-a' });
    const text = await metrics.text();
    for (const def of [MetricNames.instanceCpuPercent, MetricNames.instanceMemoryRss, MetricNames.instanceMemoryLimit]) {
      assert.match(text, new RegExp(`^# TYPE ${def.name} gauge$`, 'm'));
      assert.deepEqual(samples(text, def.name), []);
    }
  });
});
