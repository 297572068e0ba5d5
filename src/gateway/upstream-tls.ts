import { isDeepStrictEqual } from 'node:util';
import { UpstreamClient, type UpstreamClientOptions } from './http1/client.js';
import type { ServiceSpec, UpstreamTlsSpec } from '../manifest/types.js';
import { upstreamConnectOptions, type UpstreamConnectOptions } from '../security/tls.js';

export type UpstreamPoolOptions = Omit<UpstreamClientOptions, 'tls'>;

/**
 * Connections from the gateway to instances: one shared client for plain
 * HTTP, and one per service that is reached over TLS (`tls:` in the manifest),
 * with that service's CA, client certificate and server name. A reload that
 * changes a service's TLS settings gives it a new client; the old one finishes
 * its requests and closes.
 */
export class UpstreamTls {
  readonly #options: UpstreamPoolOptions;
  /** For services reached over plain HTTP. */
  readonly client: UpstreamClient;
  readonly #secure = new Map<string, { spec: UpstreamTlsSpec; connect: UpstreamConnectOptions; client: UpstreamClient }>();

  constructor(options: UpstreamPoolOptions) {
    this.#options = options;
    this.client = new UpstreamClient(options);
  }

  /**
   * Takes the services of a manifest. Reads every certificate file first: one
   * that cannot be read fails the whole call (BERTH_ERR_TLS_MATERIAL) and
   * changes nothing.
   */
  async configure(services: readonly ServiceSpec[]): Promise<void> {
    const wanted = await this.#read(services);
    const retired: UpstreamClient[] = [];
    for (const [key, entry] of this.#secure) {
      const want = wanted.get(key);
      if (want && !want.connect) continue;
      this.#secure.delete(key);
      retired.push(entry.client);
    }
    for (const [key, want] of wanted) {
      if (!want.connect) continue;
      this.#secure.set(key, { spec: want.spec, connect: want.connect, client: new UpstreamClient({ ...this.#options, tls: want.connect }) });
    }
    // Requests in flight on a retired client finish; it then closes its connections.
    for (const client of retired) void client.close();
  }

  /** Reads the files of the services whose TLS settings changed, and changes nothing: a reload's preflight. */
  async check(services: readonly ServiceSpec[]): Promise<void> {
    await this.#read(services);
  }

  /** Each TLS service's settings, with its files read when they changed (unchanged ones keep their client). */
  async #read(services: readonly ServiceSpec[]): Promise<Map<string, { spec: UpstreamTlsSpec; connect?: UpstreamConnectOptions }>> {
    const wanted = new Map<string, { spec: UpstreamTlsSpec; connect?: UpstreamConnectOptions }>();
    for (const service of services) {
      if (service.upstreamTls === null) continue;
      const key = keyOf(service);
      const known = this.#secure.get(key);
      wanted.set(key, known && isDeepStrictEqual(known.spec, service.upstreamTls) ? { spec: service.upstreamTls } : { spec: service.upstreamTls, connect: await upstreamConnectOptions(service.upstreamTls) });
    }
    return wanted;
  }

  /** Whether the service's instances are reached over TLS (their origin is https://). */
  secure(service: Pick<ServiceSpec, 'group' | 'name'>): boolean {
    return this.#secure.has(keyOf(service));
  }

  clientFor(service: Pick<ServiceSpec, 'group' | 'name'>): UpstreamClient {
    return this.#secure.get(keyOf(service))?.client ?? this.client;
  }

  /** The TLS options of a service, for connections the gateway opens itself (WebSocket upgrades). */
  connectOptionsFor(service: Pick<ServiceSpec, 'group' | 'name'>): UpstreamConnectOptions | undefined {
    return this.#secure.get(keyOf(service))?.connect;
  }

  async close(): Promise<void> {
    const clients = [this.client, ...[...this.#secure.values()].map((e) => e.client)];
    this.#secure.clear();
    await Promise.all(clients.map((c) => c.close()));
  }
}

function keyOf(service: Pick<ServiceSpec, 'group' | 'name'>): string {
  return `${service.group}/${service.name}`;
}
