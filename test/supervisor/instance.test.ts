import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { NO_ISOLATION, type VersionSpec } from '../../src/manifest/types.js';
import { InstanceController } from '../../src/supervisor/instance.js';
import { PortAllocator } from '../../src/supervisor/ports.js';
import { FakeClock } from '../../src/testing/fake-clock.js';
import { RecordingSink } from '../../src/testing/recording-sink.js';


function spec(script: string, restart: Partial<VersionSpec['restart']> = {}): VersionSpec {
  return {
    key: 'core/job@1.0.0',
    group: 'core',
    service: 'job',
    version: '1.0.0',
    stable: true,
    command: { line: 'node -e …', file: process.execPath, args: ['-e', script], shell: false },
    cwd: process.cwd(),
    env: {},
    secretEnv: {},
    isolation: NO_ISOLATION,
    replicas: 1,
    health: { check: { kind: 'none' }, intervalMs: 1000, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 1, startPeriodMs: 0, restartAfterMs: 1000 },
    restart: { policy: 'always', backoffInitialMs: 100, backoffMaxMs: 1000, backoffFactor: 1.5, stableAfterMs: 10_000, maxRestarts: 3, ...restart },
    stop: { signal: 'SIGTERM', drainTimeoutMs: 0, stopTimeoutMs: 1000 },
  };
}

describe('InstanceController restart policy (real processes, fake clock)', () => {
  const controllers: InstanceController[] = [];
  after(async () => {
    await Promise.all(controllers.map((c) => c.stop()));
  });

  function controller(s: VersionSpec, sink: RecordingSink, clock: FakeClock): InstanceController {
    const c = new InstanceController(s, { sink, clock, logger: pino({ level: 'silent' }), ports: new PortAllocator('127.0.0.1'), nodeName: 'test', host: '127.0.0.1', random: () => 0 });
    controllers.push(c);
    return c;
  }

  it('restarts a crashing process after growing backoff delays, then marks it failed', async () => {
    const clock = new FakeClock();
    const sink = new RecordingSink();
    const c = controller(spec('process.exit(3)'), sink, clock);
    const delays: number[] = [];
    const scheduled = (r: InstanceRecord): boolean => r.status === 'critical' && /restarting in/.test(r.reason ?? '');
    let waiting = sink.next((r) => scheduled(r) || r.status === 'failed');
    await c.start();
    for (;;) {
      const r = await waiting;
      if (r.status === 'failed') break;
      const delay = Number(/restarting in (\d+)ms/.exec(r.reason ?? '')?.[1]);
      delays.push(delay);
      waiting = sink.next((x) => (scheduled(x) && x.restarts === r.restarts + 1) || x.status === 'failed');
      // Nothing restarts before the backoff has passed on the clock.
      clock.advance(delay - 1);
      assert.equal(c.record.restarts, r.restarts);
      clock.advance(1);
    }
    assert.deepEqual(delays, [100, 150, 225]);
    assert.equal(c.record.restarts, 3);
    assert.match(c.record.reason ?? '', /crash loop/);
    assert.equal(c.record.lastExit?.code, 3);
  });

  it('resets the backoff after a run longer than stableAfter', async () => {
    const clock = new FakeClock();
    const sink = new RecordingSink();
    const c = controller(spec("process.on('SIGUSR2', () => process.exit(1)); setInterval(() => {}, 1e6)"), sink, clock);
    const running = sink.next((r) => r.pid !== null);
    await c.start();
    let r = await running;
    for (const expected of [100, 150]) {
      const critical = sink.next((x) => x.status === 'critical' && /restarting in/.test(x.reason ?? ''));
      process.kill(r.pid!, 'SIGUSR2');
      assert.match((await critical).reason ?? '', new RegExp(`restarting in ${expected}ms`));
      const again = sink.next((x) => x.pid !== null);
      clock.advance(expected);
      r = await again;
    }
    // This run lasts past stableAfter (10s) on the clock: its exit starts the curve over.
    clock.advance(10_000);
    const critical = sink.next((x) => x.status === 'critical' && /restarting in/.test(x.reason ?? ''));
    process.kill(r.pid!, 'SIGUSR2');
    assert.match((await critical).reason ?? '', /restarting in 100ms/);
  });

  it('on-failure leaves a clean exit stopped; never leaves a crash failed', async () => {
    const clock = new FakeClock();
    const clean = new RecordingSink();
    const a = controller(spec('process.exit(0)', { policy: 'on-failure' }), clean, clock);
    const stopped = clean.next((r) => r.status === 'stopped');
    await a.start();
    assert.match((await stopped).reason ?? '', /exited with code 0 \(restart: on-failure\)/);

    const crash = new RecordingSink();
    const b = controller(spec('process.exit(2)', { policy: 'never' }), crash, clock);
    const failed = crash.next((r) => r.status === 'failed');
    await b.start();
    assert.equal((await failed).restarts, 0);
    assert.equal(clock.pendingTimers, 0, 'no restart scheduled');
  });
});
