/**
 * Caps on open client connections, node-wide and per client address: a
 * client that opens sockets and holds them (or a flood of them) is closed at
 * accept time, before an HTTP parser or a TLS handshake is spent on it.
 */
import type { Server, Socket } from 'node:net';
import { normalizeIp } from './client-ip.js';

export interface ConnectionLimits {
  /** Open connections in total, across every attached listener (Infinity: no cap). */
  max: number;
  /** Open connections from one peer address (Infinity: no cap). */
  perIp: number;
}

export type ConnectionRefusal = 'total' | 'per-ip';

export interface ConnectionGuardOptions {
  /** Called for every refused connection (after it is destroyed), for the log and metrics. */
  onRefused?: (reason: ConnectionRefusal, ip: string) => void;
  /**
   * Addresses not held to `perIp` (still counted, and held to `max`): trusted
   * proxies, behind which every client shares one address. Asked only of an
   * address at its cap, so it costs nothing otherwise.
   */
  perIpExempt?: (ip: string) => boolean;
}

/**
 * Counts the open connections of the listeners it is attached to, and
 * destroys a new one at once when it would exceed `max` in total or `perIp`
 * from its address. One guard may watch several listeners: the limits are
 * the node's.
 *
 * The address is the peer's (`::ffff:1.2.3.4` counted as `1.2.3.4`), never
 * X-Forwarded-For: nothing has been read from the socket yet. So behind a
 * load balancer every client shares the balancer's few addresses: exempt
 * them (`perIpExempt`), or set `perIp` to allow for that.
 */
export class ConnectionGuard {
  #max: number;
  #perIp: number;
  readonly #onRefused: ((reason: ConnectionRefusal, ip: string) => void) | undefined;
  readonly #perIpExempt: ((ip: string) => boolean) | undefined;
  #open = 0;
  // Deleted at zero, so the Map holds only addresses with a connection open.
  readonly #byIp = new Map<string, number>();
  readonly #servers = new Set<Server>();
  readonly #refused = { total: 0, perIp: 0 };

  constructor(limits: ConnectionLimits, options: ConnectionGuardOptions = {}) {
    validate(limits);
    this.#max = limits.max;
    this.#perIp = limits.perIp;
    this.#onRefused = options.onRefused;
    this.#perIpExempt = options.perIpExempt;
  }

  /**
   * Starts counting a listener's connections (a net, http or https server).
   * The guard listens to the raw 'connection' event, ahead of the server's
   * own listener, so a TLS server has not read a byte of a refused socket's
   * handshake. An https server still reports each refused socket as a
   * `tlsClientError` (ECONNRESET), the TLS socket it wraps it in being closed.
   */
  attach(server: Server): void {
    if (this.#servers.has(server)) return;
    this.#servers.add(server);
    server.prependListener('connection', this.#onConnection);
  }

  /** Stops watching new connections of `server`; those open stay counted until they close. */
  detach(server: Server): void {
    if (!this.#servers.delete(server)) return;
    server.off('connection', this.#onConnection);
  }

  /** New limits (a reload): connections already open are kept, even past them. */
  update(limits: ConnectionLimits): void {
    validate(limits);
    this.#max = limits.max;
    this.#perIp = limits.perIp;
  }

  /** Open connections in total. */
  get open(): number {
    return this.#open;
  }

  /** Open connections from `ip`. */
  openFor(ip: string): number {
    return this.#byIp.get(normalizeIp(ip)) ?? 0;
  }

  /** Connections refused since the start, by reason. */
  get refused(): { total: number; perIp: number } {
    return { ...this.#refused };
  }

  readonly #onConnection = (socket: Socket): void => {
    const address = socket.remoteAddress;
    // No address: the socket closed between accept and now. Nothing to count.
    if (address === undefined) {
      socket.destroy();
      return;
    }
    const ip = normalizeIp(address);
    if (this.#open >= this.#max) return this.#refuse(socket, 'total', ip);
    const fromIp = this.#byIp.get(ip) ?? 0;
    if (fromIp >= this.#perIp && this.#perIpExempt?.(ip) !== true) return this.#refuse(socket, 'per-ip', ip);
    this.#open++;
    this.#byIp.set(ip, fromIp + 1);
    socket.once('close', () => this.#release(ip));
  };

  #refuse(socket: Socket, reason: ConnectionRefusal, ip: string): void {
    socket.destroy();
    if (reason === 'total') this.#refused.total++;
    else this.#refused.perIp++;
    this.#onRefused?.(reason, ip);
  }

  #release(ip: string): void {
    this.#open--;
    const left = (this.#byIp.get(ip) ?? 1) - 1;
    if (left === 0) this.#byIp.delete(ip);
    else this.#byIp.set(ip, left);
  }
}

function validate({ max, perIp }: ConnectionLimits): void {
  const ok = (n: number): boolean => n === Number.POSITIVE_INFINITY || (Number.isSafeInteger(n) && n >= 1);
  if (!ok(max)) throw new RangeError(`ConnectionGuard: max must be a positive integer or Infinity, got ${max}`);
  if (!ok(perIp)) throw new RangeError(`ConnectionGuard: perIp must be a positive integer or Infinity, got ${perIp}`);
}
