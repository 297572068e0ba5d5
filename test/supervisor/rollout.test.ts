import assert from 'node:assert/strict';
import { get } from 'node:http';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { closeHttpChecks } from '../../src/health/checks/http.js';
import { NO_ISOLATION, type HealthSpec, type VersionSpec } from '../../src/manifest/types.js';
import { PortAllocator } from '../../src/supervisor/ports.js';
import { rolloutWaitMs, Supervisor, type ApplyResult } from '../../src/supervisor/supervisor.js';
import { FakeClock } from '../../src/testing/fake-clock.js';
import { RecordingSink } from '../../src/testing/recording-sink.js';


/** Log lines of the supervisor and its instances, parsed, with a wait for one. */
class LogLines {
  readonly lines: Record<string, unknown>[] = [];
  #waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: () => void }[] = [];

  write(text: string): void {
    const line = JSON.parse(text) as Record<string, unknown>;
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => (w.pred(line) ? (w.resolve(), false) : true));
  }

  find(pred: (l: Record<string, unknown>) => boolean): Promise<void> {
    return this.lines.some(pred) ? Promise.resolve() : new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }
}

/** An HTTP service: /health answers 503 when SICK=1; / answers its COLOR. */
const SERVER = `
const http = require('node:http');
const sick = process.env.SICK === '1';
const server = http.createServer((req, res) => {
  if (req.url === '/health') return res.writeHead(sick ? 503 : 200).end(sick ? 'sick' : 'ok');
  res.end(JSON.stringify({ color: process.env.COLOR ?? null, instance: process.env.BERTH_INSTANCE }));
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening'));
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });
`;

/**
 * Checks every second; the timeout is far longer than the clock is ever
 * advanced while a check is in flight, so a check is never cut short by the
 * fake clock jumping ahead of the real request.
 */
const HTTP_HEALTH: HealthSpec = {
  check: { kind: 'http', path: '/health', method: 'GET', headers: {} },
  intervalMs: 1000,
  timeoutMs: 60_000,
  healthyThreshold: 1,
  unhealthyThreshold: 1,
  startPeriodMs: 0,
  restartAfterMs: 3_600_000,
};
/** The monitor's first check comes min(interval, 250 ms) after a start. */
const FIRST_CHECK_MS = 250;

function spec(replicas: number, env: Record<string, string>, health: HealthSpec = HTTP_HEALTH): VersionSpec {
  return {
    key: 'shop/web@1.0.0',
    group: 'shop',
    service: 'web',
    version: '1.0.0',
    stable: true,
    command: { line: 'node -e …', file: process.execPath, args: ['-e', SERVER], shell: false },
    cwd: process.cwd(),
    env,
    secretEnv: {},
    isolation: NO_ISOLATION,
    replicas,
    health,
    restart: { policy: 'always', backoffInitialMs: 100, backoffMaxMs: 1000, backoffFactor: 1.5, stableAfterMs: 10_000, maxRestarts: 3 },
    stop: { signal: 'SIGTERM', drainTimeoutMs: 0, stopTimeoutMs: 5000 },
  };
}

function getJson(port: number): Promise<{ color: string | null; instance: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve(JSON.parse(body) as { color: string | null; instance: string }));
    }).on('error', reject);
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Status of every instance after each write, replayed from `records[from]` on. */
function* statesAfterEachWrite(records: readonly InstanceRecord[], from = 0): Generator<Map<string, InstanceRecord>> {
  const state = new Map<string, InstanceRecord>();
  for (const [i, r] of records.entries()) {
    state.set(r.id, r);
    if (i >= from) yield state;
  }
}

describe('rolling replacement (real processes, fake clock)', () => {
  const supervisors: Supervisor[] = [];
  after(async () => {
    await Promise.all(supervisors.map((s) => s.stopAll()));
    await closeHttpChecks();
  });

  function setup(): { sup: Supervisor; sink: RecordingSink; clock: FakeClock; ready: (id: string) => Promise<void>; passing: (id: string) => Promise<void> } {
    const clock = new FakeClock();
    const sink = new RecordingSink();
    const logs = new LogLines();
    const logger = pino({ level: 'info', base: undefined }, logs);
    const sup = new Supervisor({ sink, clock, logger, ports: new PortAllocator('127.0.0.1'), nodeName: 'test', host: '127.0.0.1', random: () => 0 });
    supervisors.push(sup);
    /** Resolves once the instance's health monitor runs (its record has a pid) and its process listens. */
    const ready = async (id: string): Promise<void> => {
      await sink.find((r) => r.id === id && r.pid !== null);
      await logs.find((l) => l.instance === id && l.msg === 'listening');
    };
    /** Once the instance is ready, moves the clock to its first check and waits for `passing`. */
    const passing = async (id: string): Promise<void> => {
      await ready(id);
      const passed = sink.find((r) => r.id === id && r.status === 'passing');
      clock.advance(FIRST_CHECK_MS);
      await passed;
    };
    return { sup, sink, clock, ready, passing };
  }

  it('starts-each-new-instance-and-waits-for-it-to-pass-before-stopping-an-old-one', async () => {
    const { sup, sink, ready, passing } = setup();
    const blue = spec(3, { COLOR: 'blue' });
    assert.deepEqual(await sup.apply([blue]), { started: 3, stopped: 0, replaced: 0, failed: [] });
    const old = sup.controllers().map((c) => c.id);
    // Their first checks fall due together: the clock moves only once all three listen.
    await Promise.all(old.map(ready));
    for (const id of old) await passing(id);
    const windowStart = sink.records.length;

    const green = spec(3, { COLOR: 'green' });
    const order: string[] = [];
    const rolling = sup.apply([green]).then((r) => (order.push('rollout'), r));
    // Applies serialise: this scale-up waits for the rollout instead of adding a fifth process to it.
    const scaling = sup.apply([{ ...green, replicas: 4 }]).then((r) => (order.push('scale'), r));

    const fresh = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const next = await sink.find((r) => !old.includes(r.id) && !fresh.has(r.id) && r.pid !== null);
      fresh.add(next.id);
      await passing(next.id);
    }
    const result: ApplyResult = await rolling;
    assert.deepEqual(result, { started: 0, stopped: 0, replaced: 3, failed: [] });
    const fourth = await sink.find((r) => !old.includes(r.id) && !fresh.has(r.id) && r.pid !== null);
    await passing(fourth.id);
    assert.deepEqual(await scaling, { started: 1, stopped: 0, replaced: 0, failed: [] });
    assert.deepEqual(order, ['rollout', 'scale']);

    // At no moment fewer than 3 passing; never more than 3 + 1 processes during the rollout itself.
    const rolloutEnd = sink.records.findIndex((r) => r.id === fourth.id);
    let step = windowStart;
    for (const state of statesAfterEachWrite(sink.records, windowStart)) {
      const all = [...state.values()];
      const passingNow = all.filter((r) => r.status === 'passing').length;
      assert.ok(passingNow >= 3, `only ${passingNow} passing after write #${step}: ${JSON.stringify(all.map((r) => [r.id, r.status]))}`);
      if (step < rolloutEnd) assert.ok(all.filter((r) => r.pid !== null).length <= 4, `more than one extra process after write #${step}`);
      step++;
    }

    // Every old instance was drained, then stopped, each only after a new one passed.
    for (const id of old) {
      const draining = sink.records.findIndex((r) => r.id === id && r.status === 'draining');
      const firstNewPassing = sink.records.findIndex((r) => fresh.has(r.id) && r.status === 'passing');
      assert.ok(draining > firstNewPassing, `${id} drained after a new instance passed`);
      assert.match(sink.records.findLast((r) => r.id === id)?.reason ?? '', /^replaced by web-1\.0\.0-/);
    }
    const now = sup.controllers();
    assert.deepEqual(now.map((c) => c.status), ['passing', 'passing', 'passing', 'passing']);
    for (const c of now) {
      assert.ok(!old.includes(c.id));
      assert.deepEqual(await getJson(c.record.port), { color: 'green', instance: c.id });
    }
  });

  it('keeps-the-old-instances-when-the-new-one-never-passes-and-reports-why', async () => {
    const { sup, sink, clock, ready } = setup();
    // The old instances have no check (passing once started), so moving the clock a long way cannot touch them.
    const before = spec(2, {}, { ...HTTP_HEALTH, check: { kind: 'none' } });
    await sup.apply([before]);
    const old = sup.controllers().map((c) => ({ ...c.record }));
    assert.deepEqual(old.map((r) => r.status), ['passing', 'passing']);
    const windowStart = sink.records.length;

    const sick = spec(2, { SICK: '1' });
    const applying = sup.apply([sick]);
    const next = await sink.find((r) => r.pid !== null && !old.some((o) => o.id === r.id));
    await ready(next.id);
    const critical = sink.find((r) => r.id === next.id && r.status === 'critical');
    clock.advance(FIRST_CHECK_MS);
    await critical;
    assert.equal(sup.controllers().length, 3, 'the new instance runs beside the old ones');

    // Just short of the bound the rollout still waits; at the bound it gives up.
    const bound = rolloutWaitMs(sick.health);
    clock.advance(bound - FIRST_CHECK_MS - 1);
    assert.equal(sup.controllers().length, 3);
    clock.advance(1);
    const result = await applying;
    assert.equal(result.replaced, 0);
    assert.equal(result.failed.length, 1);
    assert.equal(result.failed[0]?.key, 'shop/web@1.0.0');
    assert.match(result.failed[0]?.reason ?? '', new RegExp(`new instance ${next.id} not passing after 2m12s \\(critical, last check (HTTP 503|timeout)`));

    assert.equal(sink.records.findLast((r) => r.id === next.id)?.status, 'stopped');
    assert.ok(!isAlive(next.pid!), 'the new process is gone');
    // The old instances were not touched: same ids and pids, still passing, never a write since.
    assert.deepEqual(
      sup.controllers().map((c) => [c.id, c.record.pid, c.status]),
      old.map((r) => [r.id, r.pid, 'passing']),
    );
    assert.ok(old.every((r) => isAlive(r.pid!)));
    assert.ok(sink.records.slice(windowStart).every((r) => r.id === next.id));
  });

  it('fails-the-rollout-at-once-when-the-new-instance-ends-failed', async () => {
    const { sup, sink } = setup();
    const before = spec(1, {}, { ...HTTP_HEALTH, check: { kind: 'none' } });
    await sup.apply([before]);
    const [old] = sup.controllers().map((c) => ({ ...c.record }));
    assert.ok(old);

    const broken: VersionSpec = { ...spec(1, {}), command: { line: 'node -e "process.exit(2)"', file: process.execPath, args: ['-e', 'process.exit(2)'], shell: false } };
    const result = await sup.apply([{ ...broken, restart: { ...broken.restart, policy: 'never' } }]);
    assert.equal(result.replaced, 0);
    assert.match(result.failed[0]?.reason ?? '', /^new instance web-1\.0\.0-\w+ failed: exited with code 2 \(restart: never\)$/);
    assert.deepEqual(
      sup.controllers().map((c) => [c.id, c.record.pid, c.status]),
      [[old.id, old.pid, 'passing']],
    );
    const failedRecord = sink.records.findLast((r) => r.id !== old.id);
    assert.equal(failedRecord?.status, 'failed');
  });

  it('a-later-apply-of-the-same-spec-retries-the-replacement', async () => {
    const { sup, passing, sink } = setup();
    const noCheck = { ...HTTP_HEALTH, check: { kind: 'none' } } as const;
    await sup.apply([spec(1, { COLOR: 'blue' }, noCheck)]);
    const [old] = sup.controllers().map((c) => c.id);
    // With a check, so the crash ends the rollout: without one an instance passes as soon as its process starts.
    const failing = await sup.apply([{ ...spec(1, { COLOR: 'green' }), command: { line: 'exit 2', file: process.execPath, args: ['-e', 'process.exit(2)'], shell: false }, restart: { ...spec(1, {}).restart, policy: 'never' } }]);
    assert.equal(failing.failed.length, 1);
    assert.deepEqual(sup.controllers().map((c) => c.id), [old]);

    const seen = new Set(sink.records.map((r) => r.id));
    const retry = sup.apply([spec(1, { COLOR: 'green' })]);
    const next = await sink.find((r) => !seen.has(r.id) && r.pid !== null);
    await passing(next.id);
    assert.deepEqual(await retry, { started: 0, stopped: 0, replaced: 1, failed: [] });
    assert.deepEqual(sup.controllers().map((c) => c.id), [next.id]);
  });
});
