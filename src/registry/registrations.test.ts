import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Catalog } from '../catalog/catalog.js';
import { EmbeddedStore } from '../catalog/stores/embedded.js';
import type { InstanceRecord, InstanceStatus } from '../catalog/types.js';
import { isBerthError } from '../errors.js';
import { closeHttpChecks } from '../health/checks/http.js';
import { FakeClock } from '../testing/fake-clock.js';
import { RegistrationEvents, Registrations, validateRegistration, type RegistrationInput } from './registrations.js';

interface Harness {
  clock: FakeClock;
  catalog: Catalog;
  regs: Registrations;
  logs: Record<string, unknown>[];
  /** Every status the catalog showed for each id, in order. */
  statuses: Map<string, InstanceStatus[]>;
  /** A second Registrations on the same catalog, as after a node restart. */
  restart: (clock?: FakeClock) => Registrations;
}

async function withRegistrations(fn: (h: Harness) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-registrations-'));
  const store = await EmbeddedStore.open({ dir });
  const catalog = await Catalog.open(store);
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const statuses = new Map<string, InstanceStatus[]>();
  catalog.subscribe((change) => {
    if (change.record === undefined) return;
    const seen = statuses.get(change.id) ?? [];
    if (seen.at(-1) !== change.record.status) seen.push(change.record.status);
    statuses.set(change.id, seen);
  });
  const clock = new FakeClock();
  const all: Registrations[] = [];
  const make = (c: FakeClock): Registrations => {
    const regs = new Registrations({ catalog, clock: c, logger, nodeName: 'node-a' });
    all.push(regs);
    return regs;
  };
  const regs = make(clock);
  regs.start();
  try {
    await fn({ clock, catalog, regs, logs, statuses, restart: (c = clock) => make(c) });
  } finally {
    for (const r of all) await r.close();
    await catalog.close();
    await store.close();
    await closeHttpChecks();
    await rm(dir, { recursive: true, force: true });
  }
}

const TTL: RegistrationInput = { id: 'pay-ext', group: 'payments', service: 'pay', version: '1.2.0', address: '10.0.0.7', port: 8080, ttl: '10s', deregisterAfter: '1m' };

/** Resolves once the catalog's record for `id` satisfies `pred` (undefined: no record), checked at every change. */
function waitForRecord(catalog: Catalog, id: string, pred: (r: InstanceRecord | undefined) => boolean, timeoutMs = 5000): Promise<InstanceRecord | undefined> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const record = catalog.get(id);
      if (!pred(record)) return false;
      clearTimeout(timer);
      unsubscribe();
      resolve(record);
      return true;
    };
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`record ${id} never matched; last: ${JSON.stringify(catalog.get(id))}`));
    }, timeoutMs);
    const unsubscribe = catalog.subscribe(() => void check());
    check();
  });
}

describe('Registrations with a TTL', () => {
  it('creates an external record that stays starting until the first heartbeat', () =>
    withRegistrations(async ({ clock, catalog, regs, statuses }) => {
      const record = await regs.register(TTL);
      assert.equal(record.id, 'pay-ext');
      assert.equal(record.source, 'external');
      assert.equal(record.node, 'node-a');
      assert.equal(record.pid, null);
      assert.equal(record.status, 'starting');
      assert.equal(record.weight, 1);
      assert.deepEqual(record.registration, { ttlMs: 10_000, http: null, deregisterAfterMs: 60_000, lastHeartbeat: null, tags: [] });
      await clock.tick(9_999);
      await regs.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'starting');
      // No heartbeat within the TTL: critical, and never passing on the way.
      await clock.tick(1);
      await regs.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'critical');
      assert.deepEqual(statuses.get('pay-ext'), ['starting', 'critical']);
    }));

  it('turns passing on a heartbeat and critical when the TTL expires without one', () =>
    withRegistrations(async ({ clock, catalog, regs, logs }) => {
      await regs.register(TTL);
      await clock.tick(3_000);
      const beat = await regs.heartbeat('pay-ext');
      assert.equal(beat.status, 'passing');
      assert.equal(beat.reason, null);
      assert.equal(beat.registration?.lastHeartbeat, new Date(clock.now()).toISOString());
      assert.equal(beat.lastCheck?.status, 'passing');
      // Each heartbeat restarts the TTL.
      for (let i = 0; i < 3; i++) {
        await clock.tick(9_000);
        await regs.heartbeat('pay-ext');
      }
      await clock.tick(9_999);
      await regs.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'passing');
      await clock.tick(1);
      await regs.settled();
      const expired = catalog.get('pay-ext');
      assert.equal(expired?.status, 'critical');
      assert.equal(expired?.reason, 'TTL expired: no heartbeat for 10s');
      assert.equal(expired?.lastCheck?.output, 'TTL expired: no heartbeat for 10s');
      assert.ok(logs.some((l) => l.event === 'instance.status' && l.instance === 'pay-ext' && l.from === 'passing' && l.to === 'critical'));
      // A late heartbeat brings it back.
      assert.equal((await regs.heartbeat('pay-ext')).status, 'passing');
    }));

  it('keeps the status and output a heartbeat reports', () =>
    withRegistrations(async ({ regs }) => {
      await regs.register(TTL);
      const warning = await regs.heartbeat('pay-ext', 'warning', 'queue 90% full');
      assert.equal(warning.status, 'warning');
      assert.equal(warning.lastCheck?.output, 'queue 90% full');
      assert.equal(warning.reason, 'heartbeat reported warning: queue 90% full');
    }));

  it('removes a record critical for deregisterAfter, and a heartbeat in time saves it', () =>
    withRegistrations(async ({ clock, catalog, regs, logs }) => {
      await regs.register(TTL);
      await regs.heartbeat('pay-ext');
      await clock.tick(10_000); // TTL expired: critical from now
      await regs.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'critical');
      await clock.tick(59_000);
      await regs.heartbeat('pay-ext'); // back before deregisterAfter
      await clock.tick(10_000); // critical again: the deregistration delay starts over
      await clock.tick(59_999);
      await regs.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'critical');
      await clock.tick(1);
      await regs.settled();
      assert.equal(catalog.get('pay-ext'), undefined);
      assert.deepEqual(regs.ids(), []);
      assert.ok(logs.some((l) => l.event === RegistrationEvents.deregistered && l.instance === 'pay-ext' && l.cause === 'critical'));
      assert.equal(clock.pendingTimers, 0, 'no timer left for a removed registration');
      await assert.rejects(regs.heartbeat('pay-ext'), (err) => isBerthError(err, 'BERTH_ERR_NOT_FOUND'));
    }));

  it('starts the deregistration delay on a critical heartbeat too', () =>
    withRegistrations(async ({ clock, catalog, regs }) => {
      await regs.register({ ...TTL, deregisterAfter: '30s' });
      await regs.heartbeat('pay-ext', 'critical', 'disk full');
      await clock.tick(9_000);
      await regs.heartbeat('pay-ext', 'critical', 'disk full'); // still critical: the delay keeps running
      await clock.tick(21_000);
      await regs.settled();
      assert.equal(catalog.get('pay-ext'), undefined);
    }));

  it('updates a registration given the same id: weight and tags keep the status, a new address starts over', () =>
    withRegistrations(async ({ catalog, regs }) => {
      const first = await regs.register(TTL);
      await regs.heartbeat('pay-ext');
      const again = await regs.register({ ...TTL, weight: 3, tags: ['blue'] });
      assert.equal(again.status, 'passing');
      assert.equal(again.weight, 3);
      assert.deepEqual(again.registration?.tags, ['blue']);
      assert.equal(again.createdAt, first.createdAt);
      assert.equal(catalog.list().length, 1);
      const moved = await regs.register({ ...TTL, address: '10.0.0.8' });
      assert.equal(moved.status, 'starting');
      assert.equal(moved.address, '10.0.0.8');
      assert.equal(moved.registration?.lastHeartbeat, null);
      assert.equal(moved.createdAt, first.createdAt);
    }));

  it('gives a registration without id a <service>-<version>-ext-<5 hex> id', () =>
    withRegistrations(async ({ regs }) => {
      const { id: _id, ...anonymous } = TTL;
      const record = await regs.register(anonymous);
      assert.match(record.id, /^pay-1\.2\.0-ext-[0-9a-f]{5}$/);
    }));

  it('deregisters on request, and refuses unknown and supervised ids', () =>
    withRegistrations(async ({ catalog, regs }) => {
      await regs.register(TTL);
      await regs.deregister('pay-ext');
      assert.equal(catalog.get('pay-ext'), undefined);
      await assert.rejects(regs.deregister('pay-ext'), (err) => isBerthError(err, 'BERTH_ERR_NOT_FOUND'));
      await assert.rejects(regs.heartbeat('nobody'), (err) => isBerthError(err, 'BERTH_ERR_NOT_FOUND'));

      const now = new Date().toISOString();
      await catalog.put({
        ...(await regs.register({ ...TTL, id: 'tmp' })),
        id: 'web-0.0.0-abcde',
        source: 'supervised',
        pid: 42,
        registration: null,
        updatedAt: now,
      });
      for (const attempt of [regs.heartbeat('web-0.0.0-abcde'), regs.deregister('web-0.0.0-abcde'), regs.register({ ...TTL, id: 'web-0.0.0-abcde' })]) {
        await assert.rejects(attempt, (err) => isBerthError(err, 'BERTH_ERR_REGISTRATION_CONFLICT') && /supervised|run by node/.test(err.message));
      }
      assert.equal(catalog.get('web-0.0.0-abcde')?.source, 'supervised');
    }));

  it('refuses invalid registrations with one detail per problem', () =>
    withRegistrations(async ({ regs }) => {
      const bad = { id: 'x y', group: 'Pay', service: 'pay', version: 'v1', address: '300.1.1.1', port: 70_000, weight: -1, ttl: '1s', check: { http: '/h' } };
      await assert.rejects(regs.register(bad), (err) => {
        assert.ok(isBerthError(err, 'BERTH_ERR_BAD_REQUEST'));
        assert.deepEqual(
          err.details.map((d) => d.where),
          ['id', 'group', 'version', 'address', 'port', 'weight', 'check'],
        );
        return true;
      });
      assert.deepEqual(validateRegistration({ group: 'g', service: 's', address: 'h', port: 1 }).problems.map((p) => p.message), [
        'exactly one of ttl (heartbeats) and check (HTTP) is required',
      ]);
      assert.match(validateRegistration({ ...TTL, ttl: '10 parsecs' }).problems[0]?.message ?? '', /must be a duration/);
      assert.match(validateRegistration({ ...TTL, ttl: '100ms' }).problems[0]?.message ?? '', /from 1s to 24h/);
      assert.match(validateRegistration({ ...TTL, deregisterAfter: '200h' }).problems[0]?.message ?? '', /from 1s to 7d/);
      for (const address of ['::1', '[fe80::1]', 'db-1.internal', 'localhost', '192.168.1.10']) {
        assert.deepEqual(validateRegistration({ ...TTL, address }).problems, [], address);
      }
      assert.equal(validateRegistration({ ...TTL, address: '[::1]' }).spec?.address, '::1');
      assert.equal(validateRegistration({ ...TTL, version: undefined }).spec?.version, '0.0.0');
    }));
});

describe('Registrations across a node restart', () => {
  it('leaves records in the catalog on close and resumes their TTL from now on start', () =>
    withRegistrations(async ({ clock, catalog, regs, restart }) => {
      await regs.register(TTL);
      await regs.heartbeat('pay-ext');
      await regs.close();
      assert.equal(clock.pendingTimers, 0, 'close stops every timer');
      assert.equal(catalog.get('pay-ext')?.status, 'passing', 'close does not deregister');

      // The node was down for longer than the TTL: the TTL counts again from the restart.
      const later = new FakeClock(clock.now() + 600_000);
      const resumed = restart(later);
      resumed.start();
      assert.deepEqual(resumed.ids(), ['pay-ext']);
      await later.tick(9_999);
      await resumed.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'passing');
      assert.equal((await resumed.heartbeat('pay-ext')).status, 'passing');
      await later.tick(10_000);
      await resumed.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'critical');
    }));

  it('restarts the deregistration delay of a critical record from now', () =>
    withRegistrations(async ({ clock, catalog, regs, restart }) => {
      await regs.register(TTL);
      await clock.tick(50_000); // critical since 10s
      await regs.settled();
      await regs.close();
      const later = new FakeClock(clock.now() + 3_600_000);
      const resumed = restart(later);
      resumed.start();
      await later.tick(59_999);
      await resumed.settled();
      assert.equal(catalog.get('pay-ext')?.status, 'critical');
      await later.tick(1);
      await resumed.settled();
      assert.equal(catalog.get('pay-ext'), undefined);
    }));

  it('tracks only the external records of its own node', () =>
    withRegistrations(async ({ catalog, regs, restart }) => {
      const record = await regs.register(TTL);
      await regs.close();
      await catalog.put({ ...record, id: 'other-ext', node: 'node-b' });
      const resumed = restart();
      resumed.start();
      assert.deepEqual(resumed.ids(), ['pay-ext']);
      await assert.rejects(resumed.heartbeat('other-ext'), (err) => isBerthError(err, 'BERTH_ERR_REGISTRATION_CONFLICT') && /node-b/.test(err.message));
    }));
});

describe('Registrations with an HTTP check', () => {
  /** A real server on port 0 whose /health answers 200 or 503 as the test says. */
  async function healthServer(): Promise<{ port: number; setHealthy(ok: boolean): void; paths: string[]; close(): Promise<void> }> {
    let healthy = true;
    const paths: string[] = [];
    const server = http.createServer((req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(healthy ? 200 : 503).end(healthy ? 'ok' : 'database down');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return {
      port: (server.address() as AddressInfo).port,
      setHealthy: (ok) => (healthy = ok),
      paths,
      close: async () => {
        server.closeAllConnections();
        server.close();
        await once(server, 'close');
      },
    };
  }

  it('is starting until a check passes, critical when it fails, removed after deregisterAfter', async () => {
    const server = await healthServer();
    try {
      await withRegistrations(async ({ clock, catalog, regs, statuses }) => {
        const record = await regs.register({
          id: 'inv-ext',
          group: 'stock',
          service: 'inventory',
          address: '127.0.0.1',
          port: server.port,
          check: { http: '/health', interval: '5s', timeout: '1s' },
          deregisterAfter: '30s',
        });
        assert.equal(record.status, 'starting');
        assert.equal(record.reason, 'waiting for the first check');
        assert.deepEqual(record.registration?.http, { path: '/health', intervalMs: 5000, timeoutMs: 1000 });

        await clock.tick(250); // the first check
        const passing = await waitForRecord(catalog, 'inv-ext', (r) => r?.status === 'passing');
        assert.equal(passing?.lastCheck?.output, 'HTTP 200');
        assert.deepEqual(server.paths, ['/health']);

        server.setHealthy(false);
        await clock.tick(5_000);
        const critical = await waitForRecord(catalog, 'inv-ext', (r) => r?.status === 'critical');
        assert.equal(critical?.lastCheck?.output, 'HTTP 503: database down');
        assert.equal(critical?.reason, 'check critical: HTTP 503: database down');

        // Heartbeats are for TTL registrations only.
        await assert.rejects(regs.heartbeat('inv-ext'), (err) => isBerthError(err, 'BERTH_ERR_REGISTRATION_CONFLICT'));

        // Critical for 30s (the checks that fail meanwhile change nothing): removed.
        await clock.tick(29_999);
        await regs.settled();
        assert.equal(catalog.get('inv-ext')?.status, 'critical');
        await clock.tick(1);
        await waitForRecord(catalog, 'inv-ext', (r) => r === undefined);
        await regs.settled();
        assert.deepEqual(statuses.get('inv-ext'), ['starting', 'passing', 'critical']);
        assert.equal(clock.pendingTimers, 0, 'the check stopped with the registration');
      });
    } finally {
      await server.close();
    }
  });

  it('goes back to passing when the check recovers, and resumes checking after a restart', async () => {
    const server = await healthServer();
    try {
      await withRegistrations(async ({ clock, catalog, regs, restart }) => {
        await regs.register({ id: 'inv-ext', group: 'stock', service: 'inventory', address: '127.0.0.1', port: server.port, check: { http: '/health', interval: '5s' } });
        server.setHealthy(false);
        await clock.tick(250);
        await waitForRecord(catalog, 'inv-ext', (r) => r?.status === 'critical');
        server.setHealthy(true);
        await clock.tick(5_000);
        await waitForRecord(catalog, 'inv-ext', (r) => r?.status === 'passing');

        await regs.close();
        const checksBefore = server.paths.length;
        server.setHealthy(false);
        const later = new FakeClock(clock.now() + 60_000);
        const resumed = restart(later);
        resumed.start();
        await later.tick(250);
        await waitForRecord(catalog, 'inv-ext', (r) => r?.status === 'critical');
        assert.equal(server.paths.length, checksBefore + 1);
      });
    } finally {
      await server.close();
    }
  });
});
