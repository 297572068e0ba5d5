/**
 * Store: the key-value interface the catalog is kept in. Modelled on etcd so
 * that an etcd-backed store can replace the embedded one: string keys and
 * values, a store-wide revision that grows with every change, prefix watches
 * that can resume from a revision so a list + watch pair never misses a change.
 */

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the last change to this key. */
  revision: number;
}

export type WatchEvent =
  | { type: 'put'; key: string; value: string; revision: number }
  | { type: 'delete'; key: string; revision: number };

export interface ListResult {
  items: KeyValue[];
  /** The store's revision at the moment of the list: watch from `revision + 1` to miss nothing. */
  revision: number;
}

export interface WatchOptions {
  /** Deliver every change with a revision >= this one, including past ones still held. */
  fromRevision?: number;
}

/** Stops a watch; no event is delivered after it resolves. */
export type Unwatch = () => Promise<void>;

export interface Store {
  get(key: string): Promise<KeyValue | undefined>;
  /** Writes the value; resolves with the new revision. */
  put(key: string, value: string): Promise<number>;
  /** Resolves true when the key existed. */
  delete(key: string): Promise<boolean>;
  /** Every key starting with `prefix`, in key order. */
  list(prefix: string): Promise<ListResult>;
  /** Calls `onEvents` with each batch of changes under `prefix`, in revision order. */
  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, options?: WatchOptions): Promise<Unwatch>;
  /** Flushes what is pending and releases files and connections. */
  close(): Promise<void>;
}
