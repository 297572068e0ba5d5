import type { Dispatcher } from 'undici';
import { DEFAULT_WAIT_MS, INDEX_HEADER, STABLE_HEADER } from '../admin/discovery-watch.js';
import { delay, type Clock } from '../clock.js';
import { BerthError, isBerthError } from '../errors.js';

// A passing instance, as `GET /v1/discovery/{service}` answers it (docs/admin-api.md): the API's own
// type, imported as a type only, so the client does not load the admin server.
import type { DiscoveredInstance } from '../admin/api.js';
export type { DiscoveredInstance };

/** What the client knows of a service. Replaced, never changed, when it changes. */
export interface ServiceView {
  readonly instances: readonly DiscoveredInstance[];
  /** The manifest's stable version of the service; null for one only registered from outside. */
  readonly stable: string | null;
}

export interface DiscoveryOptions {
  /** The admin API's URL (a path in it is kept as a prefix). */
  admin: URL;
  dispatcher: Dispatcher;
  clock: Clock;
  random: () => number;
  /** How long one blocking query waits on the node. */
  waitMs?: number;
  onChange?: (service: string, view: ServiceView) => void;
}

/** One discovery request that is not a blocking one, to the end of its answer. */
const FETCH_TIMEOUT_MS = 10_000;
/** A node that does not block (no index in its answers) is asked this often. */
const POLL_MS = 5_000;
/** A blocking query that comes back sooner than this with nothing new waits the rest before the next (a node answering early must not make a busy loop). */
const MIN_ROUND_MS = 1_000;
/** Backoff after admin errors: from 250 ms, doubling, at most 10 s, with jitter. */
const ERROR_BACKOFF_MS = 250;
const MAX_ERROR_BACKOFF_MS = 10_000;

interface Entry {
  view: ServiceView | undefined;
  /** The node's index of `view`, for the next blocking query; null when the node gives none. */
  index: string | null;
  first: Promise<ServiceView>;
}

interface Answer {
  view: ServiceView;
  index: string | null;
}

const EMPTY: ServiceView = Object.freeze({ instances: Object.freeze([]), stable: null });

/**
 * The client's discovery cache: the first call for a service fetches its
 * passing instances from the admin API, and from then on one blocking query
 * per service (`?index=&wait=`) keeps them current, so calls never ask the
 * admin API themselves. While the admin API cannot be reached, the last list
 * known stays in use and the queries back off.
 */
export class Discovery {
  readonly #options: DiscoveryOptions;
  readonly #origin: string;
  readonly #base: string;
  readonly #waitMs: number;
  readonly #entries = new Map<string, Entry>();
  readonly #stop = new AbortController();
  readonly #loops = new Set<Promise<void>>();

  constructor(options: DiscoveryOptions) {
    this.#options = options;
    this.#origin = options.admin.origin;
    this.#base = options.admin.pathname.replace(/\/+$/, '');
    this.#waitMs = options.waitMs ?? DEFAULT_WAIT_MS;
  }

  /** The service as last known, or undefined before its first answer. */
  peek(service: string): ServiceView | undefined {
    return this.#entries.get(service)?.view;
  }

  /** The service as known, fetching it (and starting its watch) the first time. */
  get(service: string): Promise<ServiceView> {
    const entry = this.#entries.get(service);
    if (entry !== undefined) return entry.view !== undefined ? Promise.resolve(entry.view) : entry.first;
    if (this.#stop.signal.aborted) return Promise.reject(closedError());
    const created: Entry = { view: undefined, index: null, first: Promise.resolve(EMPTY) };
    created.first = this.#fetch(service, null).then(
      (answer) => {
        created.view = answer.view;
        created.index = answer.index;
        if (!this.#stop.signal.aborted) this.#watch(service, created);
        return answer.view;
      },
      (err: unknown) => {
        // Not cached: the next call asks again.
        this.#entries.delete(service);
        throw err;
      },
    );
    this.#entries.set(service, created);
    return created.first;
  }

  /** Ends every watch (and a first fetch in progress); resolves when they have stopped. */
  async close(): Promise<void> {
    this.#stop.abort(closedError());
    await Promise.all([...this.#loops]);
  }

  #watch(service: string, entry: Entry): void {
    const loop = this.#follow(service, entry).finally(() => this.#loops.delete(loop));
    this.#loops.add(loop);
  }

  /** One blocking query after the other until close(); never rejects. */
  async #follow(service: string, entry: Entry): Promise<void> {
    const { clock } = this.#options;
    const signal = this.#stop.signal;
    let failures = 0;
    while (!signal.aborted) {
      const started = clock.now();
      let answer: Answer;
      try {
        answer = await this.#fetch(service, entry.index);
        failures = 0;
      } catch (err) {
        if (signal.aborted) return;
        if (isBerthError(err, 'BERTH_ERR_NO_ROUTE')) {
          // The node no longer knows the service at all: it has no instance, and no index to wait on.
          answer = { view: EMPTY, index: null };
        } else {
          // Unreachable or failing: keep the list we have and ask again later.
          failures++;
          const cap = Math.min(MAX_ERROR_BACKOFF_MS, ERROR_BACKOFF_MS * 2 ** Math.min(failures - 1, 16));
          await this.#pause(cap * (0.5 + this.#options.random() / 2));
          continue;
        }
      }
      const changed = !sameView(entry.view, answer.view);
      const early = answer.index !== null && answer.index === entry.index && !changed && clock.now() - started < MIN_ROUND_MS;
      entry.index = answer.index;
      if (changed) {
        entry.view = answer.view;
        this.#changed(service, answer.view);
      }
      if (answer.index === null) await this.#pause(POLL_MS);
      else if (early) await this.#pause(MIN_ROUND_MS);
    }
  }

  #changed(service: string, view: ServiceView): void {
    try {
      this.#options.onChange?.(service, view);
    } catch (err) {
      process.emitWarning(`berth/client: onChange threw: ${err instanceof Error ? err.message : String(err)}`, { code: 'BERTH_CLIENT' });
    }
  }

  #pause(ms: number): Promise<void> {
    return delay(this.#options.clock, ms, this.#stop.signal).catch(() => undefined);
  }

  /** `GET /v1/discovery/{service}`: at once without an index, else a blocking query. */
  async #fetch(service: string, index: string | null): Promise<Answer> {
    const query = index === null ? '' : `?index=${encodeURIComponent(index)}&wait=${Math.round(this.#waitMs)}ms`;
    const where = `the admin API at ${this.#origin}${this.#base}`;
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      res = await this.#options.dispatcher.request({
        origin: this.#origin,
        path: `${this.#base}/v1/discovery/${encodeURIComponent(service)}${query}`,
        method: 'GET',
        headers: { accept: 'application/json' },
        signal: this.#stop.signal,
        headersTimeout: (index === null ? 0 : this.#waitMs) + FETCH_TIMEOUT_MS,
        bodyTimeout: FETCH_TIMEOUT_MS,
      });
      text = await res.body.text();
    } catch (err) {
      if (this.#stop.signal.aborted) throw closedError();
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new BerthError('BERTH_ERR_NODE_UNREACHABLE', `cannot reach ${where} to discover "${service}" (${code}); is BERTH_ADMIN right?`, { cause: err });
    }
    if (res.statusCode === 404) throw new BerthError('BERTH_ERR_NO_ROUTE', `no service named "${service}" (asked ${where})`);
    if (res.statusCode !== 200) throw new BerthError('BERTH_ERR_NODE_UNREACHABLE', `${where} answered ${res.statusCode} to the discovery of "${service}": ${text.slice(0, 200)}`);
    const instances = parseInstances(text);
    if (instances === undefined) throw new BerthError('BERTH_ERR_NODE_UNREACHABLE', `${where} did not answer a list of instances to the discovery of "${service}"; is BERTH_ADMIN a Berth admin API?`);
    const stable = headerOf(res.headers, STABLE_HEADER);
    return { view: Object.freeze({ instances, stable: stable ?? null }), index: headerOf(res.headers, INDEX_HEADER) ?? null };
  }
}

function headerOf(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const value = headers[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function parseInstances(text: string): DiscoveredInstance[] | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!Array.isArray(json)) return undefined;
  const valid = json.every((i: Partial<DiscoveredInstance> | null) => typeof i === 'object' && i !== null && typeof i.id === 'string' && typeof i.address === 'string' && typeof i.port === 'number' && typeof i.version === 'string');
  if (!valid) return undefined;
  return (json as DiscoveredInstance[]).map((i) => Object.freeze({ ...i, weight: typeof i.weight === 'number' ? i.weight : 1, tags: Array.isArray(i.tags) ? i.tags : [] }));
}

function sameView(a: ServiceView | undefined, b: ServiceView): boolean {
  return a !== undefined && a.stable === b.stable && JSON.stringify(a.instances) === JSON.stringify(b.instances);
}

export function closedError(): BerthError {
  return new BerthError('BERTH_ERR_CLIENT_CLOSED', 'the berth/client was closed');
}
