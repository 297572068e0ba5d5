import { NullObserver, type BreakerStateName, type RouteRef } from '../gateway/observer.js';
import { Events } from './events.js';
import type { Logger } from './logger.js';

/**
 * Log lines for the gateway's policy state changes: a breaker opening or
 * closing, an instance ejected or back. Rare events an operator wants to see
 * next to the instance's own lines, so they are warnings when traffic is cut.
 */
export class PolicyLog extends NullObserver {
  readonly #log: Logger;

  constructor(logger: Logger) {
    super();
    this.#log = logger.child({ component: 'gateway' });
  }

  override breakerChanged(scope: { group: string; service: string; version?: string; instance?: string }, from: BreakerStateName, to: BreakerStateName, reason: string): void {
    const event = to === 'open' ? Events.breakerOpened : to === 'half-open' ? Events.breakerHalfOpen : Events.breakerClosed;
    const what = scope.instance ? `instance ${scope.instance}` : `service ${scope.group}/${scope.service}`;
    const fields = { event, group: scope.group, service: scope.service, version: scope.version, instance: scope.instance, from, to, reason };
    if (to === 'open') this.#log.warn(fields, `circuit breaker of ${what} opened: ${reason}`);
    else this.#log.info(fields, `circuit breaker of ${what} ${to}: ${reason}`);
  }

  override outlierChanged(scope: RouteRef & { instance: string }, kind: 'ejected' | 'returned', reason: string | undefined, until: number | undefined): void {
    if (kind === 'ejected') {
      this.#log.warn(
        { event: Events.instanceEjected, ...scope, reason, until: until === undefined ? undefined : new Date(until).toISOString() },
        `instance ${scope.instance} ejected (${reason ?? 'outlier'})`,
      );
    } else this.#log.info({ event: Events.instanceReturned, ...scope }, `instance ${scope.instance} returned from ejection`);
  }
}
