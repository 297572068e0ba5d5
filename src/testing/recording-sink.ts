import type { InstanceRecord } from '../catalog/types.js';
import type { InstanceSink } from '../supervisor/instance.js';

/** An InstanceSink for tests: keeps every record written, in order, and lets a test wait for one. */
export class RecordingSink implements InstanceSink {
  readonly records: InstanceRecord[] = [];
  #waiters: { pred: (r: InstanceRecord) => boolean; resolve: (r: InstanceRecord) => void }[] = [];

  put(record: InstanceRecord): Promise<void> {
    this.records.push(record);
    this.#waiters = this.#waiters.filter((w) => (w.pred(record) ? (w.resolve(record), false) : true));
    return Promise.resolve();
  }

  /** The next record written that matches `pred`. */
  next(pred: (r: InstanceRecord) => boolean): Promise<InstanceRecord> {
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }

  /** The first record (already written or to come) matching `pred`. */
  find(pred: (r: InstanceRecord) => boolean): Promise<InstanceRecord> {
    const seen = this.records.find(pred);
    return seen ? Promise.resolve(seen) : this.next(pred);
  }
}
