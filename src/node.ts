import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Catalog } from './catalog/catalog.js';
import { EmbeddedStore } from './catalog/stores/embedded.js';
import type { Store } from './catalog/store.js';
import { systemClock, type Clock } from './clock.js';
import { BerthError } from './errors.js';
import { versionsOf, type NodeSpec } from './manifest/types.js';
import { startAdminServer, type AdminServer } from './admin/api.js';
import { PortAllocator } from './supervisor/ports.js';
import { Supervisor } from './supervisor/supervisor.js';
import { Watchdog } from './supervisor/watchdog.js';
import { Events } from './telemetry/events.js';
import type { Logger } from './telemetry/logger.js';
import { closeHttpChecks } from './health/checks/http.js';

/** Stopped records kept per service as history across restarts. */
const HISTORY_PER_SERVICE = 20;

export interface NodeInfo {
  name: string;
  pid: number;
  manifest: string;
  dataDir: string;
  startedAt: string;
  admin: string;
}

/**
 * One Berth node: the composition root that wires store, catalog, supervisor
 * and admin API. Parts receive the narrow things they use, never the node.
 */
export class BerthNode {
  readonly #logger: Logger;
  readonly #clock: Clock;
  #spec: NodeSpec;
  #store: Store | undefined;
  #catalog: Catalog | undefined;
  #supervisor: Supervisor | undefined;
  #watchdog: Watchdog | undefined;
  #admin: AdminServer | undefined;
  #info: NodeInfo | undefined;
  #stopping: Promise<void> | undefined;

  constructor(spec: NodeSpec, deps: { logger: Logger; clock?: Clock }) {
    this.#spec = spec;
    this.#logger = deps.logger.child({ node: spec.nodeName });
    this.#clock = deps.clock ?? systemClock;
  }

  get info(): NodeInfo | undefined {
    return this.#info;
  }

  get catalog(): Catalog | undefined {
    return this.#catalog;
  }

  async start(): Promise<NodeInfo> {
    const spec = this.#spec;
    this.#logger.info({ event: Events.nodeStarting, manifest: spec.file, dataDir: spec.dataDir }, 'starting');
    await mkdir(spec.dataDir, { recursive: true });
    await claimDataDir(spec.dataDir);
    try {
      this.#store = await EmbeddedStore.open({ dir: spec.dataDir });
      this.#catalog = await Catalog.open(this.#store, {
        onInvalid: (key, err) => this.#logger.warn({ key, err: err.message }, 'skipping an unreadable catalog record'),
      });
      await this.#retirePreviousRun(this.#catalog);

      this.#watchdog = Watchdog.start();
      this.#supervisor = new Supervisor({
        sink: this.#catalog,
        clock: this.#clock,
        logger: this.#logger,
        ports: new PortAllocator(spec.instanceHost),
        nodeName: spec.nodeName,
        host: spec.instanceHost,
        watchdog: this.#watchdog,
      });
      this.#admin = await startAdminServer({
        listen: spec.admin.listen,
        catalog: this.#catalog,
        logger: this.#logger,
        spec: () => this.#spec,
        node: () => this.#info,
      });
      this.#info = {
        name: spec.nodeName,
        pid: process.pid,
        manifest: spec.file,
        dataDir: spec.dataDir,
        startedAt: new Date(this.#clock.now()).toISOString(),
        admin: this.#admin.url,
      };
      await writeFile(join(spec.dataDir, NODE_FILE), `${JSON.stringify(this.#info, null, 2)}\n`);
      this.#logger.info({ event: Events.adminListening, url: this.#admin.url }, `admin API on ${this.#admin.url}`);
      await this.#supervisor.apply(versionsOf(spec));
      this.#logger.info({ event: Events.nodeReady, admin: this.#admin.url, instances: this.#supervisor.controllers().length }, 'ready');
      return this.#info;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stops every instance within its grace, then the API and the store. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#logger.info({ event: Events.nodeStopping }, 'stopping');
    await this.#admin?.close();
    await this.#supervisor?.stopAll();
    this.#watchdog?.close();
    await this.#catalog?.close();
    await this.#store?.close();
    await closeHttpChecks();
    // Only the node that wrote the node file removes it (a refused second node must not).
    if (this.#info) await rm(join(this.#spec.dataDir, NODE_FILE), { force: true });
    this.#logger.info({ event: Events.nodeStopped }, 'stopped');
  }

  /** Instances a previous run of this node left behind are gone (the watchdog saw to it): record that. */
  async #retirePreviousRun(catalog: Catalog): Promise<void> {
    const stale = catalog.list({ node: this.#spec.nodeName }).filter((r) => r.source === 'supervised' && r.status !== 'stopped' && r.status !== 'failed');
    const now = new Date(this.#clock.now()).toISOString();
    for (const record of stale) {
      await catalog.put({ ...record, status: 'stopped', pid: null, startedAt: null, updatedAt: now, reason: 'the node restarted' });
    }
    await catalog.pruneHistory({ keepPerService: HISTORY_PER_SERVICE });
  }
}

export const NODE_FILE = 'node.json';

/** Reads the node file of a data dir: who runs there and where its admin API is. */
export async function readNodeFile(dataDir: string): Promise<NodeInfo | undefined> {
  try {
    return JSON.parse(await readFile(join(dataDir, NODE_FILE), 'utf8')) as NodeInfo;
  } catch {
    return undefined;
  }
}

/** Two nodes on one data dir would corrupt each other's catalog: refuse while the owner lives. */
async function claimDataDir(dataDir: string): Promise<void> {
  const owner = await readNodeFile(dataDir);
  if (owner && owner.pid !== process.pid && isAlive(owner.pid)) {
    throw new BerthError('BERTH_ERR_NODE_RUNNING', `a Berth node (pid ${owner.pid}) already runs on ${dataDir}; its admin API is ${owner.admin}`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
