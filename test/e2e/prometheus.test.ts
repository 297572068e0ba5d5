/**
 * A real Prometheus scraping a real `berth up`: what an operator's Prometheus
 * sees, read back through Prometheus' own query API.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { request } from 'undici';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { INSTANCE_STATUSES } from '../../src/catalog/types.js';
import type { NodeInfo } from '../../src/node.js';
import { splitLines } from '../../src/supervisor/line-splitter.js';
import { MetricNames } from '../../src/telemetry/metric-names.js';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';

const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';

const MANIFEST = testManifest(`groups:
  core:
    services:
      web:
        command: node web.mjs
        replicas: 2
        health: { http: /health, interval: 200ms, timeout: 150ms, startPeriod: 0s }
`);

/** One element of an instant vector from `/api/v1/query`. */
interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

/**
 * A Prometheus server of its own: temp config and TSDB, port 0 (the address
 * it bound is read from its log, so no port is guessed), scraping one target
 * every second.
 */
class PrometheusServer {
  readonly #child: ChildProcess;
  readonly #dir: string;
  readonly #log: string[] = [];
  readonly #exited: Promise<void>;
  url = '';

  private constructor(child: ChildProcess, dir: string) {
    this.#child = child;
    this.#dir = dir;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Scrapes `target` sending `token` as a bearer token, as an operator's Prometheus does (`authorization` in the scrape config). */
  static async start(target: string, token: string): Promise<PrometheusServer> {
    const dir = await mkdtemp(join(tmpdir(), 'berth-prometheus-'));
    // honor_labels: Berth's `instance` label (the instance id) is kept rather than renamed `exported_instance` (docs/metrics.md).
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: berth',
        '    honor_labels: true',
        '    authorization:',
        `      credentials: '${token}'`,
        '    static_configs:',
        `      - targets: ['${target}']`,
        '',
      ].join('\n'),
    );
    const child = spawn(
      PROMETHEUS,
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, '--web.listen-address=127.0.0.1:0', '--log.level=info'],
      { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const server = new PrometheusServer(child, dir);
    try {
      server.url = `http://${await server.#ready()}`;
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  /** Resolves with the address Prometheus listens on once it says it serves requests. */
  #ready(): Promise<string> {
    return new Promise((resolve, reject) => {
      let address: string | undefined;
      const timer = setTimeout(() => reject(new Error(`Prometheus not ready within 30s:\n${this.#log.join('\n')}`)), 30_000);
      this.#child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`Prometheus exited (${code ?? signal}) before it was ready:\n${this.#log.join('\n')}`));
      });
      let ready = false;
      splitLines(this.#child.stderr!, (line) => {
        this.#log.push(line);
        // logfmt (2.x) and slog (3.x) both print: msg="Listening on" address=127.0.0.1:PORT
        const listening = /msg="Listening on" address=(\S+)/.exec(line);
        if (listening) address = listening[1];
        if (line.includes('Server is ready to receive web requests')) ready = true;
        // The two lines come from different goroutines, in either order (2.42 has printed "ready" first).
        if (ready && address !== undefined) {
          clearTimeout(timer);
          resolve(address);
        }
      });
    });
  }

  async query(promql: string): Promise<VectorSample[]> {
    const res = await request(`${this.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.body.json()) as { status: string; error?: string; data?: { resultType: string; result: VectorSample[] } };
    if (body.status !== 'success' || body.data?.resultType !== 'vector') throw new Error(`${promql}: ${JSON.stringify(body)}`);
    return body.data.result;
  }

  /**
   * Polls `promql` until `check` holds for its result. Polling is the only way:
   * Prometheus has no event for "this scrape landed".
   */
  async waitFor(promql: string, check: (result: VectorSample[]) => boolean, timeoutMs = 30_000): Promise<VectorSample[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = await this.query(promql);
      if (check(result)) return result;
      if (Date.now() > deadline) {
        const targets = await request(`${this.url}/api/v1/targets`).then((r) => r.body.text());
        throw new Error(`${promql} did not reach the expected value within ${timeoutMs}ms; last: ${JSON.stringify(result)}; targets: ${targets}`);
      }
      await delay(200);
    }
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill('SIGTERM');
      const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000);
      await this.#exited;
      clearTimeout(timer);
    }
    await rm(this.#dir, { recursive: true, force: true });
  }
}

const valueOf = (sample: VectorSample | undefined): number => Number(sample?.value[1]);

describe('Prometheus scraping a real node', { skip: existsSync(PROMETHEUS) ? false : `${PROMETHEUS} is missing: scripts/install-deps.sh installs it (Debian package prometheus)` }, () => {
  let project: Awaited<ReturnType<typeof makeProject>> | undefined;
  let node: BerthProcess | undefined;
  let prometheus: PrometheusServer | undefined;
  let web: InstanceRecord[] = [];

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    const all = await node.waitForInstances((xs) => xs.filter((r) => r.service === 'web' && r.status === 'passing').length === 2);
    web = all.filter((r) => r.service === 'web');
    // Prometheus gets a token of its own, of the least role that reads /metrics.
    const created = await node.call('POST', '/v1/tokens', { name: 'prometheus', role: 'viewer' });
    assert.equal(created.status, 201);
    prometheus = await PrometheusServer.start(new URL(node.admin).host, (created.body as { token: string }).token);
    await prometheus.waitFor('up{job="berth"} == 1', (r) => r.length === 1);
  });

  after(async () => {
    await prometheus?.stop();
    await node?.stop();
    await project?.cleanup();
  });

  it('sees every instance of the node up, and the catalog counted by status', async () => {
    const info = await node!.api<NodeInfo>('/v1/node');
    const up = await prometheus!.waitFor(MetricNames.instanceUp.name, (r) => r.length === web.length && r.every((s) => valueOf(s) === 1));
    assert.deepEqual(up.map((s) => s.metric.instance).sort(), web.map((r) => r.id).sort());
    for (const sample of up) {
      assert.equal(sample.metric.job, 'berth');
      assert.equal(sample.metric.group, 'core');
      assert.equal(sample.metric.service, 'web');
      assert.equal(sample.metric.version, '0.0.0');
      assert.equal(sample.metric.node, info.name);
    }

    const passing = await prometheus!.query(`${MetricNames.instanceStatus.name}{status="passing"}`);
    assert.deepEqual(passing.map((s) => s.metric.instance).sort(), web.map((r) => r.id).sort());

    const instances = await node!.instances();
    const expected = Object.fromEntries(INSTANCE_STATUSES.map((status) => [status, instances.filter((r) => r.status === status).length]));
    assert.equal(expected.passing, 2);
    const counted = await prometheus!.waitFor(MetricNames.catalogInstances.name, (r) => r.length === INSTANCE_STATUSES.length);
    assert.deepEqual(Object.fromEntries(counted.map((s) => [s.metric.status, valueOf(s)])), expected);
  });

  it('counts requests sent through the gateway', async () => {
    const ready = await node!.waitForLog((l) => l.event === 'node.ready');
    assert.equal(typeof ready.gateway, 'string', 'node.ready names the gateway URL');
    for (let i = 0; i < 20; i++) {
      const res = await request(`${String(ready.gateway)}/core/web/hello`);
      await res.body.text();
      assert.equal(res.statusCode, 200);
    }
    const query = `sum(${MetricNames.gatewayRequests.name}{service="web",code_class="2xx"})`;
    const result = await prometheus!.waitFor(query, (r) => valueOf(r[0]) >= 20);
    assert.ok(valueOf(result[0]) >= 20);
    const durations = await prometheus!.query(`sum(${MetricNames.gatewayRequestDuration.name}_count{service="web"})`);
    assert.ok(valueOf(durations[0]) >= 20, 'every request is in the duration histogram');
  });

  it("serves /metrics that promtool finds no fault with, beyond prom-client's own process metrics", { skip: existsSync(PROMTOOL) ? false : `${PROMTOOL} is missing` }, async () => {
    const res = await request(`${node!.admin}/metrics`, { headers: node!.auth() });
    const text = await res.body.text();
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    for (const def of Object.values(MetricNames)) assert.match(text, new RegExp(`^# TYPE ${def.name} `, 'm'));

    const promtool = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    promtool.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    promtool.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const exited = new Promise<number | null>((resolve) => promtool.once('exit', resolve));
    promtool.stdin.end(text);
    await exited;
    // prom-client names three gauges `*_total` (berth_nodejs_active_handles_total…): its naming, not ours.
    const ours = output.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('berth_nodejs_'));
    assert.deepEqual(ours, []);
  });
});
