import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Catalog } from './catalog/catalog.js';
import { EmbeddedStore } from './catalog/stores/embedded.js';
import type { Store } from './catalog/store.js';
import { systemClock, type Clock } from './clock.js';
import { BerthError, isBerthError } from './errors.js';
import { versionsOf, type NodeSpec } from './manifest/types.js';
import { formatPlan, isEmptyPlan, keepVersions, planChanges, planCounts, type Plan } from './manifest/diff.js';
import { formatManifestError, loadManifest } from './manifest/load.js';
import { startAdminServer, type AdminServer } from './admin/api.js';
import { AdminTokens, writeTokenFile } from './admin/tokens.js';
import { AuditLog } from './admin/audit.js';
import { ApiKeys } from './security/api-keys.js';
import { loadIdentityKey } from './security/identity.js';
import { JwtVerifier } from './security/jwt.js';
import { isDeepStrictEqual } from 'node:util';
import { isLoopbackHost } from './manifest/listen.js';
import { Registrations } from './registry/registrations.js';
import { PortAllocator } from './supervisor/ports.js';
import { Supervisor, type ApplyResult } from './supervisor/supervisor.js';
import { Watchdog } from './supervisor/watchdog.js';
import { Isolator } from './supervisor/isolation/isolator.js';
import { UsageSampler } from './supervisor/isolation/usage.js';
import { Events } from './telemetry/events.js';
import type { Logger } from './telemetry/logger.js';
import { closeHttpChecks } from './health/checks/http.js';
import { Metrics } from './telemetry/metrics.js';
import { Gateway } from './gateway/gateway.js';
import { fanOut } from './gateway/observer.js';
import { PolicyLog } from './telemetry/policy-log.js';
import { AccessLog } from './telemetry/access-log.js';

/** Stopped records kept per service as history across restarts. */
const HISTORY_PER_SERVICE = 20;

export interface NodeInfo {
  name: string;
  pid: number;
  manifest: string;
  dataDir: string;
  startedAt: string;
  admin: string;
  gateway: string;
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
  /** The admin API's bearer tokens, kept in the store (`tokens/`). */
  #tokens: AdminTokens | undefined;
  /** The gateway's API keys, kept in the store (`apikeys/`). */
  #apiKeys: ApiKeys | undefined;
  /** Users, limits and sandboxes of instances; its cgroups go when the node stops. */
  #isolator: Isolator | undefined;
  /** CPU, memory, fds and processes of every running instance, sampled every few seconds. */
  #usage: UsageSampler | undefined;
  /** Verifies bearer JWTs against `auth.jwt`; null when the manifest declares no issuer. */
  #jwt: JwtVerifier | null = null;
  /** Every mutating admin call: `<dataDir>/audit.log` and `admin.audit` log lines. */
  #audit: AuditLog | undefined;
  /** Prometheus metrics: the gateway's observer, served by the admin API at `/metrics`. */
  #metrics: Metrics | undefined;
  #registrations: Registrations | undefined;
  /** Set once every instance of the manifest was started (`/readyz`). */
  #ready = false;
  #gateway: Gateway | undefined;
  #info: NodeInfo | undefined;
  #stopping: Promise<void> | undefined;
  /** Told the new spec on every reload, after the supervisor applied it (the gateway swaps its routes). */
  readonly #reloadListeners: { name: string; listener: ReloadListener }[] = [];
  /** The tail of the reload queue: reloads run one after the other. */
  #reloads: Promise<unknown> = Promise.resolve();

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
      this.#tokens = await AdminTokens.open(this.#store, {
        clock: this.#clock,
        onError: (err) => this.#logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'admin tokens: a store operation failed'),
      });
      await this.#bootstrapToken(this.#tokens);
      this.#apiKeys = await ApiKeys.open(this.#store, {
        clock: this.#clock,
        onError: (err) => this.#logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'API keys: a store operation failed'),
      });
      this.#audit = await AuditLog.open(spec.dataDir, this.#logger);

      // What this machine can enforce of users, limits and sandboxes; what it cannot is said before anything starts.
      const isolator = await Isolator.open({ nodeName: spec.nodeName, dataDir: spec.dataDir });
      this.#isolator = isolator;
      this.#logger.info({ event: Events.nodeIsolation, cgroups: isolator.cgroups }, `isolation: cgroups ${isolator.cgroups}`);
      const reportIsolation = async (next: NodeSpec): Promise<void> => {
        for (const problem of await isolator.problems(versionsOf(next))) this.#logger.warn({ event: Events.nodeIsolationProblem }, problem);
      };
      await reportIsolation(spec);
      this.onReload(reportIsolation, 'isolation');
      this.#usage = new UsageSampler({ clock: this.#clock, onError: (err) => this.#logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'usage sampling failed') });
      if (process.platform === 'linux') this.#usage.start();

      // Metrics exist before the gateway (whose observer they are) and are read at scrape time.
      this.#metrics = new Metrics({ catalog: this.#catalog, nodeName: spec.nodeName, usage: this.#usage });

      // Who callers are: the key that signs the identity instances receive, and the JWT issuers' keys.
      const identityKey = await loadIdentityKey(spec.auth.identityKey, spec.dataDir);
      this.#jwt = await this.#jwtVerifier(spec);

      // The gateway listens before any instance starts: it is the supervisor's drainer.
      this.#gateway = new Gateway({
        catalog: this.#catalog,
        logger: this.#logger,
        observer: fanOut(new AccessLog(this.#logger), new PolicyLog(this.#logger), this.#metrics),
        security: { jwt: this.#jwt, apiKeys: this.#apiKeys, identityKey },
        clock: this.#clock,
      });
      await this.#gateway.configure(spec);
      const gateway = this.#gateway;
      this.onReload((next) => gateway.configure(next), 'gateway');

      this.#watchdog = Watchdog.start();
      this.#supervisor = new Supervisor({
        sink: this.#catalog,
        clock: this.#clock,
        logger: this.#logger,
        ports: new PortAllocator(spec.instanceHost),
        nodeName: spec.nodeName,
        host: spec.instanceHost,
        watchdog: this.#watchdog,
        drainer: this.#gateway,
        // Known once the admin API listens, which is before any instance starts.
        adminUrl: () => this.#admin?.url,
        identityKey: () => identityKey.toString('base64url'),
        isolator,
        usage: this.#usage,
        checkTls: (version) => gateway.upstreamTlsFor(version.group, version.service),
      });
      // External registrations resume (TTLs from now, HTTP checks restarted) before the admin API takes new ones.
      this.#registrations = new Registrations({ catalog: this.#catalog, clock: this.#clock, logger: this.#logger, nodeName: spec.nodeName });
      this.#registrations.start();
      this.#admin = await startAdminServer({
        listen: spec.admin.listen,
        catalog: this.#catalog,
        logger: this.#logger,
        spec: () => this.#spec,
        node: () => this.#info,
        ready: () => this.#ready,
        registrations: this.#registrations,
        metrics: this.#metrics,
        reload: { plan: () => this.plan(), reload: () => this.reload() },
        policyState: (group, service) => gateway.policyState(group, service),
        security: { tokens: this.#tokens, apiKeys: this.#apiKeys, audit: this.#audit },
        usage: this.#usage,
      });
      this.#info = {
        name: spec.nodeName,
        pid: process.pid,
        manifest: spec.file,
        dataDir: spec.dataDir,
        startedAt: new Date(this.#clock.now()).toISOString(),
        admin: this.#admin.url,
        gateway: this.#gateway.urls.main,
      };
      await writeFile(join(spec.dataDir, NODE_FILE), `${JSON.stringify(this.#info, null, 2)}\n`);
      if (isLoopbackHost(spec.admin.listen.host)) {
        this.#logger.info({ event: Events.adminListening, url: this.#admin.url }, `admin API on ${this.#admin.url}`);
      } else {
        this.#logger.warn(
          { event: Events.adminListening, url: this.#admin.url, remote: true },
          `admin API on ${this.#admin.url}, reachable beyond this machine (admin.allowRemote): tokens travel in clear text unless TLS stands in front`,
        );
      }
      await this.#supervisor.apply(versionsOf(spec));
      this.#ready = true;
      this.#logger.info({ event: Events.nodeReady, admin: this.#admin.url, gateway: this.#gateway.urls.main, instances: this.#supervisor.controllers().length }, 'ready');
      return this.#info;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Calls `listener` with the new spec on every reload, once the supervisor
   * has applied it and before the node's spec is swapped. A listener that
   * throws is logged and listed in the reload's `result.failed` under `name`;
   * the others still run. Returns the unsubscribe.
   */
  onReload(listener: ReloadListener, name = 'reload listener'): () => void {
    const entry = { name, listener };
    this.#reloadListeners.push(entry);
    return () => {
      const at = this.#reloadListeners.indexOf(entry);
      if (at >= 0) this.#reloadListeners.splice(at, 1);
    };
  }

  /**
   * Re-reads and validates the manifest file and says what a reload would
   * change. Applies nothing. Throws the manifest's BerthError when it is invalid.
   */
  async plan(): Promise<Plan> {
    const next = await loadManifest(this.#spec.file);
    return planChanges(this.#spec, next);
  }

  /**
   * Re-reads the manifest file and applies it without a restart (docs/reload.md).
   * An invalid manifest throws its BerthError and a change that needs a restart
   * throws BERTH_ERR_RELOAD_REFUSED; either way nothing changes. Otherwise the
   * supervisor applies it (rolling replacement of changed versions), the reload
   * listeners are told, and the new spec is in force — except for versions whose
   * rollout failed, which keep their old spec and are listed in `result.failed`.
   * Reloads run one at a time.
   */
  reload(): Promise<ReloadOutcome> {
    const run = this.#reloads.then(() => this.#reload());
    this.#reloads = run.catch(() => undefined);
    return run;
  }

  async #reload(): Promise<ReloadOutcome> {
    const current = this.#spec;
    this.#logger.info({ event: Events.nodeReloading, manifest: current.file }, `reloading ${current.file}`);
    const supervisor = this.#supervisor;
    if (!supervisor || !this.#info || this.#stopping) {
      throw this.#refuse(new BerthError('BERTH_ERR_RELOAD_REFUSED', `cannot reload: the node is ${this.#stopping ? 'stopping' : 'still starting'}`));
    }
    let next: NodeSpec;
    try {
      next = await loadManifest(current.file);
    } catch (err) {
      throw this.#refuse(err);
    }
    const plan = planChanges(current, next);
    if (plan.restartRequired.length > 0) {
      const fields = plan.restartRequired.map((r) => r.field).join(', ');
      throw this.#refuse(
        new BerthError('BERTH_ERR_RELOAD_REFUSED', `reload refused: ${fields} cannot change while the node runs; restart it to apply the manifest`, {
          details: plan.restartRequired.map((r) => ({ where: r.field, message: `${r.from} → ${r.to} needs a restart` })),
        }),
      );
    }
    // What the gateway needs from outside (certificates, keys) is read first: a bad file refuses the reload before anything changes.
    let jwt: JwtVerifier | null | undefined;
    try {
      await this.#gateway?.preflight(next);
      if (!isDeepStrictEqual(current.auth.jwt, next.auth.jwt)) jwt = await this.#jwtVerifier(next);
    } catch (err) {
      // A file or key the new manifest names cannot be read: the reload is refused (409), like one that needs a restart.
      const reason = err instanceof Error ? err.message : String(err);
      throw this.#refuse(new BerthError('BERTH_ERR_RELOAD_REFUSED', `reload refused, nothing changed: ${reason}`, { cause: err }));
    }
    if (jwt !== undefined) {
      this.#jwt?.close();
      this.#jwt = jwt;
      this.#gateway?.setJwtVerifier(jwt);
    }
    const result = await supervisor.apply(versionsOf(next));
    if (this.#stopping) {
      this.#logger.warn({ event: Events.nodeReloadFailed }, 'reload cut short: the node is stopping');
      throw new BerthError('BERTH_ERR_RELOAD_REFUSED', 'cannot finish the reload: the node is stopping');
    }
    // A version whose rollout failed still runs its old spec: say so, so the next reload plans it again.
    const applied = keepVersions(next, current, new Set(result.failed.map((f) => f.key)));
    for (const { name, listener } of [...this.#reloadListeners]) {
      try {
        await listener(applied);
      } catch (err) {
        const reason = isBerthError(err) ? err.message : err instanceof Error ? err.message : String(err);
        this.#logger.error({ event: Events.nodeReloadFailed, listener: name, err }, `${name} could not take the new manifest: ${reason}`);
        result.failed.push({ key: name, reason });
      }
    }
    this.#spec = applied;

    const summary = { ...planCounts(plan), started: result.started, stopped: result.stopped, replacedInstances: result.replaced, failed: result.failed, plan: formatPlan(plan) };
    if (result.failed.length > 0) {
      this.#logger.warn(
        { event: Events.nodeReloaded, ...summary },
        `reloaded with failures: ${result.failed.map((f) => `${f.key}: ${f.reason}`).join('; ')}`,
      );
    } else {
      this.#logger.info({ event: Events.nodeReloaded, ...summary }, isEmptyPlan(plan) ? 'reloaded: no changes' : 'reloaded');
    }
    return { plan, result };
  }

  /** The JWT issuers' verifier of a manifest, or null when it declares none. */
  async #jwtVerifier(spec: NodeSpec): Promise<JwtVerifier | null> {
    if (spec.auth.jwt.length === 0) return null;
    return JwtVerifier.create(spec.auth.jwt, {
      clock: this.#clock,
      onError: (err, issuer) => this.#logger.warn({ event: Events.authKeysUnavailable, issuer, err: err instanceof Error ? err.message : String(err) }, `the keys of JWT issuer ${issuer} are unavailable`),
    });
  }

  /** Logs a refused reload (nothing changed) and returns the error to throw. */
  #refuse(err: unknown): unknown {
    if (isBerthError(err)) {
      const text = err.code.startsWith('BERTH_ERR_MANIFEST') ? formatManifestError(err) : err.message;
      this.#logger.error({ event: Events.nodeReloadFailed, code: err.code, details: err.details }, `reload refused, the running configuration stays: ${text}`);
    } else {
      this.#logger.error({ event: Events.nodeReloadFailed, err }, 'reload failed');
    }
    return err;
  }

  /** Stops every instance within its grace, then the API and the store. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#logger.info({ event: Events.nodeStopping }, 'stopping');
    // A rollout waiting for a new instance to pass ends now, so a reload request in flight does not hold the admin API open.
    this.#supervisor?.close();
    await this.#admin?.close();
    await this.#audit?.close();
    await this.#tokens?.close();
    await this.#apiKeys?.close();
    this.#jwt?.close();
    await this.#registrations?.close();
    await this.#supervisor?.stopAll();
    this.#usage?.stop();
    await this.#isolator?.close().catch((err: unknown) => this.#logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'cannot remove the node\'s cgroups'));
    await this.#gateway?.close();
    this.#watchdog?.close();
    await this.#catalog?.close();
    await this.#store?.close();
    await closeHttpChecks();
    // Only the node that wrote the node file removes it (a refused second node must not).
    if (this.#info) await rm(join(this.#spec.dataDir, NODE_FILE), { force: true });
    this.#logger.info({ event: Events.nodeStopped }, 'stopped');
  }

  /**
   * With no admin token in the store (first start, or every admin token
   * revoked: restarting the node is the way back in), creates one and writes
   * it to `<dataDir>/admin-token`, mode 0600, for the CLI on this machine.
   * The log says where it is, never what it is.
   */
  async #bootstrapToken(tokens: AdminTokens): Promise<void> {
    if (tokens.has('admin')) return;
    const { token, secret } = await tokens.create('bootstrap', 'admin');
    let file: string;
    try {
      file = await writeTokenFile(this.#spec.dataDir, secret);
    } catch (err) {
      // An admin token nobody can read would keep the next start from making one.
      await tokens.revoke(token.id);
      throw err;
    }
    this.#logger.info(
      { event: Events.adminTokenCreated, id: token.id, name: token.name, role: token.role, file },
      `no admin token existed: created "${token.name}" (${token.id}) and wrote it to ${file} (mode 0600); the CLI on this machine uses it`,
    );
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

/** Told the spec a reload applied; the gateway swaps its routes in one. */
export type ReloadListener = (spec: NodeSpec) => Promise<void> | void;

/** What a reload did: the changes it planned and what the supervisor did about them. */
export interface ReloadOutcome {
  plan: Plan;
  result: ApplyResult;
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
