import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildAdminApi, type AdminDeps } from '../admin/api.js';
import { Catalog } from '../catalog/catalog.js';
import { EmbeddedStore } from '../catalog/stores/embedded.js';
import type { Clock } from '../clock.js';
import { parseManifest } from '../manifest/load.js';
import { Registrations } from '../registry/registrations.js';
import { FakeClock } from './fake-clock.js';
import { testSecurity, type TestSecurity } from './admin-security.js';
import type { NodeSpec } from '../manifest/types.js';

/**
 * What every admin API test stands on: a temp dir, an embedded store, a
 * catalog, external registrations, the manifest, and tokens for each role.
 * `deps` are the admin API's required dependencies over them; a test adds
 * what it needs and builds the API.
 */
export interface AdminFixture {
  dir: string;
  store: EmbeddedStore;
  catalog: Catalog;
  regs: Registrations;
  spec: NodeSpec;
  security: TestSecurity;
  deps: AdminDeps;
  /** Listens on 127.0.0.1 port 0; the API's URL. */
  listen(app: FastifyInstance): Promise<string>;
  /** Closes the registrations, tokens, catalog and store, and removes the temp dir (the app is the test's to close first). */
  close(): Promise<void>;
}

export async function openAdminFixture(manifest: string, prefix = 'berth-admin-'): Promise<AdminFixture> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const store = await EmbeddedStore.open({ dir });
  const catalog = await Catalog.open(store);
  const logger = pino({ level: 'silent' });
  const regs = new Registrations({ catalog, clock: new FakeClock(), logger, nodeName: 'node-a' });
  regs.start();
  const spec = parseManifest(manifest, join(dir, 'berth.yaml'));
  const security = await testSecurity(store, dir, { logger });
  return {
    dir,
    store,
    catalog,
    regs,
    spec,
    security,
    deps: {
      listen: { host: '127.0.0.1', port: 0 },
      catalog,
      logger,
      spec: () => spec,
      node: () => undefined,
      ready: () => true,
      registrations: regs,
      security: security.security,
    },
    listen: async (app) => {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const address = app.server.address();
      return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    },
    close: async () => {
      await regs.close();
      await security.close();
      await catalog.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A real admin API on port 0 over a real catalog (embedded store in a temp dir): what discovery and its watch run against in tests. */
export interface AdminNode {
  url: string;
  app: FastifyInstance;
  catalog: Catalog;
  /** Blocking discovery queries waiting now. */
  readonly waiting: number;
  /** Resolves once exactly `count` blocking queries wait (at once if they do already). */
  waiters(count: number): Promise<void>;
  /** Stops the admin API only (the catalog stays): the node's API is gone. */
  stopApi(): Promise<void>;
  /** Stops the admin API (if still up), then the catalog and store, and removes the temp dir. */
  close(): Promise<void>;
}

/** Starts one; `clock` times the blocking queries' waits (default: the real clock). */
export async function startAdminNode(manifest: string, options: { clock?: Clock } = {}): Promise<AdminNode> {
  const fixture = await openAdminFixture(manifest, 'berth-admin-node-');
  let waiting = 0;
  let watchers: { count: number; resolve: () => void }[] = [];
  const app = buildAdminApi({
    ...fixture.deps,
    discovery: {
      ...(options.clock ? { clock: options.clock } : {}),
      onWaiters: (count) => {
        waiting = count;
        watchers = watchers.filter((w) => {
          if (w.count !== count) return true;
          w.resolve();
          return false;
        });
      },
    },
  });
  const url = await fixture.listen(app);
  let appClosed: Promise<void> | undefined;
  return {
    url,
    app,
    catalog: fixture.catalog,
    get waiting() {
      return waiting;
    },
    waiters: (count) => (waiting === count ? Promise.resolve() : new Promise((resolve) => watchers.push({ count, resolve }))),
    stopApi: () => (appClosed ??= app.close()),
    close: async () => {
      await (appClosed ??= app.close());
      await fixture.close();
    },
  };
}
