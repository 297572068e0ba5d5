/**
 * The embedded store: the whole key space in memory, persisted to one JSON
 * file in the data dir. It is the default store of a single node and needs no
 * other software. Semantics follow etcd (see store.ts) so the catalog cannot
 * tell it from the etcd store.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open as openFile, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock, Timer } from '../../clock.js';
import { systemClock } from '../../clock.js';
import { BerthError } from '../../errors.js';
import type { KeyValue, ListResult, Store, Unwatch, WatchEvent, WatchOptions } from '../store.js';

export interface EmbeddedStoreOptions {
  /** Data dir; created when missing. */
  dir: string;
  /** File name inside `dir`. Default `store.json`. */
  file?: string;
  /** Writes are debounced by this long so a burst of changes costs one file write. Default 50. */
  flushDelayMs?: number;
  /** How many recent events are kept for `watch(…, { fromRevision })`. Default 10,000. */
  historyLimit?: number;
  /** Told about problems that have no caller to reject: a watch callback that threw, a background write that failed. Default: a process warning. */
  onError?: (err: unknown) => void;
  clock?: Clock;
}

interface Entry {
  value: string;
  revision: number;
}

interface Watcher {
  readonly prefix: string;
  readonly onEvents: (events: WatchEvent[]) => void;
  /** Events below this revision are not for this watcher (it asked to start later). */
  readonly minRevision: number;
  queue: WatchEvent[];
  scheduled: boolean;
  active: boolean;
}

interface FileShape {
  version: 1;
  revision: number;
  entries: Record<string, Entry>;
}

const DEFAULT_FILE = 'store.json';
const DEFAULT_FLUSH_DELAY_MS = 50;
const DEFAULT_HISTORY_LIMIT = 10_000;
/** After a failed write, wait at least this long before trying again so a full disk is not hammered. */
const RETRY_DELAY_MS = 1_000;

export class EmbeddedStore implements Store {
  /** Absolute or relative path of the store file. */
  readonly path: string;

  readonly #dir: string;
  readonly #file: string;
  readonly #flushDelayMs: number;
  readonly #historyLimit: number;
  readonly #onError: (err: unknown) => void;
  readonly #clock: Clock;

  readonly #entries: Map<string, Entry>;
  #revision: number;
  /** Recent events, one per revision, consecutive: they cover [#historyStart, #revision]. */
  #history: WatchEvent[] = [];
  #historyStart: number;
  readonly #watchers = new Set<Watcher>();

  #closed = false;
  #closing: Promise<void> | undefined;

  /** Changes not yet handed to a write. */
  #dirty = false;
  #timer: Timer | undefined;
  /** Settles (never rejects) when the write in flight is done. */
  #writing: Promise<void> | undefined;
  #lastWriteFailed = false;
  #writes = 0;

  private constructor(options: Required<Omit<EmbeddedStoreOptions, 'clock' | 'onError'>> & { clock: Clock; onError: (err: unknown) => void }, loaded: { entries: Map<string, Entry>; revision: number }) {
    this.#dir = options.dir;
    this.#file = options.file;
    this.path = join(options.dir, options.file);
    this.#flushDelayMs = options.flushDelayMs;
    this.#historyLimit = options.historyLimit;
    this.#onError = options.onError;
    this.#clock = options.clock;
    this.#entries = loaded.entries;
    this.#revision = loaded.revision;
    // History does not survive a restart: a watcher that was behind must list again.
    this.#historyStart = loaded.revision + 1;
  }

  /**
   * Opens (or creates) the store in `options.dir`. Rejects with
   * BERTH_ERR_STORE_CORRUPT when the file exists but cannot be read back; the
   * file is then left exactly as it was.
   */
  static async open(options: EmbeddedStoreOptions): Promise<EmbeddedStore> {
    const file = options.file ?? DEFAULT_FILE;
    const flushDelayMs = options.flushDelayMs ?? DEFAULT_FLUSH_DELAY_MS;
    const historyLimit = options.historyLimit ?? DEFAULT_HISTORY_LIMIT;
    if (file === '' || file.includes('/') || file.includes('\\')) throw new TypeError(`EmbeddedStore: file must be a plain file name, got ${JSON.stringify(file)}`);
    if (!(flushDelayMs >= 0)) throw new RangeError(`EmbeddedStore: flushDelayMs must be >= 0, got ${flushDelayMs}`);
    if (!Number.isSafeInteger(historyLimit) || historyLimit < 1) throw new RangeError(`EmbeddedStore: historyLimit must be a positive integer, got ${historyLimit}`);

    await mkdir(options.dir, { recursive: true });
    const path = join(options.dir, file);
    const loaded = await loadFile(path);
    await removeStaleTempFiles(options.dir, file);
    return new EmbeddedStore(
      { dir: options.dir, file, flushDelayMs, historyLimit, clock: options.clock ?? systemClock, onError: options.onError ?? warn },
      loaded ?? { entries: new Map(), revision: 0 },
    );
  }

  /** The store-wide revision: the revision of the latest change. */
  get revision(): number {
    return this.#revision;
  }

  /** Completed file writes since open; shows how well writes coalesce. */
  get writes(): number {
    return this.#writes;
  }

  get(key: string): Promise<KeyValue | undefined> {
    return settle(() => {
      this.#assertOpen();
      const entry = this.#entries.get(key);
      return entry === undefined ? undefined : { key, value: entry.value, revision: entry.revision };
    });
  }

  put(key: string, value: string): Promise<number> {
    return settle(() => {
      this.#assertOpen();
      assertKey(key);
      if (typeof value !== 'string') throw new TypeError(`Store values are strings, got ${typeof value}`);
      const revision = ++this.#revision;
      this.#entries.set(key, { value, revision });
      this.#record({ type: 'put', key, value, revision });
      return revision;
    });
  }

  delete(key: string): Promise<boolean> {
    return settle(() => {
      this.#assertOpen();
      // Like etcd, deleting a missing key changes nothing, not even the revision.
      if (!this.#entries.delete(key)) return false;
      const revision = ++this.#revision;
      this.#record({ type: 'delete', key, revision });
      return true;
    });
  }

  list(prefix: string): Promise<ListResult> {
    return settle(() => {
      this.#assertOpen();
      const items: KeyValue[] = [];
      for (const [key, entry] of this.#entries) {
        if (key.startsWith(prefix)) items.push({ key, value: entry.value, revision: entry.revision });
      }
      items.sort((a, b) => compareKeys(a.key, b.key));
      return { items, revision: this.#revision };
    });
  }

  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, options: WatchOptions = {}): Promise<Unwatch> {
    return settle(() => this.#watch(prefix, onEvents, options));
  }

  #watch(prefix: string, onEvents: (events: WatchEvent[]) => void, options: WatchOptions): Unwatch {
    this.#assertOpen();
    const from = options.fromRevision;
    if (from !== undefined && (!Number.isSafeInteger(from) || from < 1)) {
      throw new RangeError(`fromRevision must be a positive integer, got ${from}`);
    }
    if (from !== undefined && from < this.#historyStart) {
      throw new BerthError(
        'BERTH_ERR_STORE_COMPACTED',
        `Cannot watch from revision ${from}: the store only holds changes from revision ${this.#historyStart} (current ${this.#revision}); list again and watch from the new revision`,
      );
    }
    const watcher: Watcher = { prefix, onEvents, minRevision: from ?? this.#revision + 1, queue: [], scheduled: false, active: true };
    if (from !== undefined) {
      // Replay and registration happen in one synchronous step, so no change can fall between them.
      for (let i = from - this.#historyStart; i < this.#history.length; i++) {
        const event = this.#history[i];
        if (event !== undefined && event.key.startsWith(prefix)) watcher.queue.push(event);
      }
    }
    this.#watchers.add(watcher);
    if (watcher.queue.length > 0) this.#schedule(watcher);
    return () => {
      watcher.active = false;
      watcher.queue = [];
      this.#watchers.delete(watcher);
      return Promise.resolve();
    };
  }

  /** Writes pending changes to disk now; resolves once they are durable. */
  async flush(): Promise<void> {
    this.#assertOpen();
    await this.#flush();
  }

  /**
   * Stops every watch, writes what is pending and refuses further operations.
   * Rejects only if that last write fails.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    for (const watcher of this.#watchers) {
      watcher.active = false;
      watcher.queue = [];
    }
    this.#watchers.clear();
    await this.#flush();
  }

  #assertOpen(): void {
    if (this.#closed) throw new BerthError('BERTH_ERR_STORE_CLOSED', `The store at ${this.path} is closed`);
  }

  #record(event: WatchEvent): void {
    this.#history.push(event);
    // Trim in chunks (amortised O(1) per change) while always keeping at least #historyLimit events.
    if (this.#history.length >= 2 * this.#historyLimit) {
      this.#history = this.#history.slice(this.#history.length - this.#historyLimit);
      this.#historyStart = this.#revision - this.#history.length + 1;
    }
    for (const watcher of this.#watchers) {
      if (event.revision >= watcher.minRevision && event.key.startsWith(watcher.prefix)) {
        watcher.queue.push(event);
        this.#schedule(watcher);
      }
    }
    this.#markDirty();
  }

  #schedule(watcher: Watcher): void {
    if (watcher.scheduled) return;
    watcher.scheduled = true;
    // Delivered after the write returns: callbacks never run inside put/delete,
    // and a synchronous burst of changes reaches a watcher as one batch.
    queueMicrotask(() => {
      watcher.scheduled = false;
      if (!watcher.active || watcher.queue.length === 0) return;
      const batch = watcher.queue;
      watcher.queue = [];
      try {
        watcher.onEvents(batch);
      } catch (err) {
        this.#report(err);
      }
    });
  }

  #report(err: unknown): void {
    try {
      this.#onError(err);
    } catch {
      // The error handler itself failed; there is no one left to tell.
    }
  }

  #markDirty(): void {
    this.#dirty = true;
    // While a write is in flight the change waits: the write's end schedules the next one.
    if (this.#timer === undefined && this.#writing === undefined) this.#scheduleFlush(this.#flushDelayMs);
  }

  #scheduleFlush(delayMs: number): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#flush().catch((err: unknown) => this.#report(err));
    }, delayMs);
  }

  async #flush(): Promise<void> {
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    while (this.#writing !== undefined) await this.#writing;
    if (this.#dirty) await this.#write();
  }

  async #write(): Promise<void> {
    this.#dirty = false;
    const text = this.#serialize();
    let settle!: () => void;
    this.#writing = new Promise((resolve) => (settle = resolve));
    try {
      await writeAtomically(this.#dir, this.#file, text);
      this.#writes++;
      this.#lastWriteFailed = false;
    } catch (err) {
      // Keep the changes pending: the next write carries them.
      this.#dirty = true;
      this.#lastWriteFailed = true;
      throw new Error(`Cannot write the store file ${this.path}: ${(err as Error).message}`, { cause: err });
    } finally {
      this.#writing = undefined;
      settle();
      if (this.#dirty && !this.#closed && this.#timer === undefined) {
        this.#scheduleFlush(this.#lastWriteFailed ? Math.max(this.#flushDelayMs, RETRY_DELAY_MS) : this.#flushDelayMs);
      }
    }
  }

  #serialize(): string {
    // A null-prototype object so that a key named `__proto__` is an ordinary entry.
    const entries = Object.create(null) as Record<string, Entry>;
    for (const [key, entry] of this.#entries) entries[key] = { value: entry.value, revision: entry.revision };
    const doc: FileShape = { version: 1, revision: this.#revision, entries };
    return JSON.stringify(doc);
  }
}

/**
 * Runs a synchronous step as a Store operation: its result resolves and its
 * throw rejects, as the interface promises, without an async function that
 * never awaits.
 */
function settle<T>(step: () => T): Promise<T> {
  try {
    return Promise.resolve(step());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

function assertKey(key: string): void {
  if (typeof key !== 'string' || key === '') throw new TypeError('Store keys are non-empty strings');
}

/** Code point order, which is the UTF-8 byte order etcd sorts keys by. */
function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    // Surrogates (0xD800–0xDFFF) encode code points above 0xFFFF, so they sort after every other UTF-16 unit.
    const sa = ca >= 0xd800 && ca <= 0xdfff ? ca + 0x10000 : ca;
    const sb = cb >= 0xd800 && cb <= 0xdfff ? cb + 0x10000 : cb;
    return sa - sb;
  }
  return a.length - b.length;
}

function warn(err: unknown): void {
  process.emitWarning(err instanceof Error ? err : new Error(String(err)), { code: 'BERTH_STORE' });
}

function tempPrefix(file: string): string {
  return `.${file}.`;
}

/** Write to a temp file in the same dir, fsync it, rename it over the target, fsync the dir: a crash leaves the old file or the new one, never half of one. */
async function writeAtomically(dir: string, file: string, text: string): Promise<void> {
  const temp = join(dir, `${tempPrefix(file)}${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await openFile(temp, 'wx', 0o600);
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, join(dir, file));
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  // The rename is only durable once the directory entry is.
  const dirHandle = await openFile(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/** Temp files of a write that a crash interrupted: never the store itself, so safe to drop. */
async function removeStaleTempFiles(dir: string, file: string): Promise<void> {
  const prefix = tempPrefix(file);
  for (const name of await readdir(dir)) {
    if (name.startsWith(prefix) && name.endsWith('.tmp')) await unlink(join(dir, name)).catch(() => undefined);
  }
}

async function loadFile(path: string): Promise<{ entries: Map<string, Entry>; revision: number } | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (err) {
    throw corrupt(path, 'the file is not valid UTF-8', err);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw corrupt(path, `invalid JSON: ${(err as Error).message}`, err);
  }
  if (!isObject(doc)) throw corrupt(path, 'expected a JSON object at the top level');
  if (doc.version !== 1) throw corrupt(path, `unsupported version ${JSON.stringify(doc.version)} (expected 1)`);
  const revision = doc.revision;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0) {
    throw corrupt(path, `"revision" must be a non-negative integer, got ${JSON.stringify(revision)}`);
  }
  if (!isObject(doc.entries)) throw corrupt(path, '"entries" must be an object');
  const entries = new Map<string, Entry>();
  for (const [key, entry] of Object.entries(doc.entries)) {
    const where = `entries[${JSON.stringify(key)}]`;
    if (key === '') throw corrupt(path, `${where}: keys must not be empty`);
    if (!isObject(entry)) throw corrupt(path, `${where} must be an object`);
    if (typeof entry.value !== 'string') throw corrupt(path, `${where}.value must be a string`);
    const entryRevision = entry.revision;
    if (typeof entryRevision !== 'number' || !Number.isSafeInteger(entryRevision) || entryRevision < 1 || entryRevision > revision) {
      throw corrupt(path, `${where}.revision must be an integer from 1 to ${revision}, got ${JSON.stringify(entryRevision)}`);
    }
    entries.set(key, { value: entry.value, revision: entryRevision });
  }
  return { entries, revision };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function corrupt(path: string, problem: string, cause?: unknown): BerthError {
  return new BerthError(
    'BERTH_ERR_STORE_CORRUPT',
    `The store file ${path} cannot be read: ${problem}. It was left untouched; repair it or move it aside to start with an empty store.`,
    { details: [{ where: path, message: problem }], cause },
  );
}
