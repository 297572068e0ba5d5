import type { VersionSpec } from '../manifest/types.js';
import { InstanceController, type InstanceDeps } from './instance.js';

/**
 * Keeps the declared number of instances of every service version running.
 * It owns the controllers; their state is published through the catalog.
 */
export class Supervisor {
  readonly #deps: InstanceDeps;
  /** Controllers by version key (`group/service@version`), oldest first. */
  readonly #byVersion = new Map<string, InstanceController[]>();
  #closed = false;

  constructor(deps: InstanceDeps) {
    this.#deps = deps;
  }

  /**
   * Reconciles running instances with `specs`: starts what is missing, stops
   * what is extra (newest first) and every instance of a version no longer declared.
   */
  async apply(specs: readonly VersionSpec[]): Promise<void> {
    if (this.#closed) return;
    const wanted = new Map(specs.map((s) => [s.key, s]));
    const work: Promise<void>[] = [];
    for (const [key, controllers] of this.#byVersion) {
      if (!wanted.has(key)) {
        this.#byVersion.delete(key);
        work.push(...controllers.map((c) => c.stop('removed from the manifest')));
      }
    }
    for (const spec of specs) {
      const controllers = this.#byVersion.get(spec.key) ?? [];
      this.#byVersion.set(spec.key, controllers);
      while (controllers.length > spec.replicas) {
        work.push((controllers.pop() as InstanceController).stop('scaled down'));
      }
      while (controllers.length < spec.replicas) {
        const controller = new InstanceController(spec, this.#deps);
        controllers.push(controller);
        work.push(controller.start());
      }
    }
    await Promise.all(work);
  }

  /** Every controller, for inspection. */
  controllers(): InstanceController[] {
    return [...this.#byVersion.values()].flat();
  }

  /** Stops every instance at once, each within its own drain and stop timeouts. */
  async stopAll(reason = 'node stopping'): Promise<void> {
    this.#closed = true;
    const all = this.controllers();
    this.#byVersion.clear();
    await Promise.all(all.map((c) => c.stop(reason)));
  }
}
