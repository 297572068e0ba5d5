/**
 * The Store contract: behaviour every Store implementation must show, tested
 * only through the interface. The embedded store runs it in
 * stores/embedded.test.ts; the etcd store runs the same suite.
 *
 * Revisions are compared, never predicted: an etcd cluster may be shared, so
 * only "grows", "equals what put returned" and order are asserted.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError } from '../errors.js';
import type { Store, WatchEvent } from './store.js';

export interface OpenedStore {
  /** A store with no keys under the prefixes the suite uses (`c/`, `d/`, …). */
  store: Store;
  /** Closes the store if still open and removes whatever it left behind. */
  cleanup(): Promise<void>;
}

/** Fails a test that waits for an event that never comes instead of hanging the run. */
const TIMEOUT_MS = 10_000;

/** Declares `<name> store contract` with one test per promise of the Store interface. */
export function storeContract(name: string, open: () => Promise<OpenedStore>): void {
  const test = (title: string, fn: (store: Store) => Promise<void>): void => {
    void it(title, { timeout: TIMEOUT_MS }, async () => {
      const opened = await open();
      try {
        await fn(opened.store);
      } finally {
        await opened.cleanup();
      }
    });
  };

  void describe(`${name} store contract`, () => {
    test('put-then-get-returns-value-with-growing-revisions', async (store) => {
      const r1 = await store.put('c/a', 'one');
      const r2 = await store.put('c/b', 'two');
      assert.ok(r2 > r1, `revision grows: ${r1} then ${r2}`);
      assert.deepEqual(await store.get('c/a'), { key: 'c/a', value: 'one', revision: r1 });
      assert.deepEqual(await store.get('c/b'), { key: 'c/b', value: 'two', revision: r2 });

      const r3 = await store.put('c/a', 'uno');
      assert.ok(r3 > r2);
      assert.deepEqual(await store.get('c/a'), { key: 'c/a', value: 'uno', revision: r3 }, 'get shows the latest value and its mod revision');
      assert.deepEqual(await store.get('c/b'), { key: 'c/b', value: 'two', revision: r2 }, 'other keys keep their revision');
    });

    test('get-of-missing-key-is-undefined', async (store) => {
      assert.equal(await store.get('c/missing'), undefined);
      await store.put('c/present', 'x');
      assert.equal(await store.get('c/presen'), undefined, 'a prefix of a key is not the key');
    });

    test('delete-reports-existence-and-bumps-revision', async (store) => {
      const put = await store.put('d/k', 'v');
      assert.equal(await store.delete('d/k'), true);
      assert.equal(await store.get('d/k'), undefined);
      const afterDelete = (await store.list('d/')).revision;
      assert.ok(afterDelete > put, `delete moves the revision past the put: ${put} then ${afterDelete}`);
      assert.equal(await store.delete('d/k'), false, 'second delete finds nothing');
      assert.equal(await store.delete('d/never'), false);
      const next = await store.put('d/k', 'again');
      assert.ok(next > afterDelete);
    });

    test('list-returns-prefix-in-key-order-with-current-revision', async (store) => {
      await store.put('l/b', '2');
      await store.put('l/c', '3');
      await store.put('m/a', 'other prefix');
      await store.put('l', 'the prefix without slash');
      await store.put('lx', 'a sibling that shares the first letter');
      await store.put('l/a', '1');
      const last = await store.put('l/b/nested', '2.1');

      const result = await store.list('l/');
      assert.deepEqual(result.items.map((kv) => [kv.key, kv.value]), [['l/a', '1'], ['l/b', '2'], ['l/b/nested', '2.1'], ['l/c', '3']]);
      assert.ok(result.revision >= last, `list revision ${result.revision} is at least the last write ${last}`);
      for (const kv of result.items) assert.ok(kv.revision <= result.revision);

      assert.deepEqual((await store.list('nothing-here/')).items, []);
    });

    test('watch-delivers-puts-and-deletes-under-prefix-in-order', async (store) => {
      const seen = collect();
      const unwatch = await store.watch('w/', seen.onEvents);
      const r1 = await store.put('w/a', '1');
      await store.put('x/a', 'not watched');
      const r2 = await store.put('w/b', '2');
      await store.delete('w/a');
      await store.delete('x/a');
      await store.put('ww', 'shares letters, not the prefix');
      const r4 = await store.put('w/end', 'marker');
      await seen.until((events) => events.some((e) => e.key === 'w/end'));
      await unwatch();

      assert.deepEqual(seen.events.map(describeEvent), ['put w/a=1', 'put w/b=2', 'delete w/a', 'put w/end=marker']);
      assert.equal(seen.events[0]?.revision, r1);
      assert.equal(seen.events[1]?.revision, r2);
      assert.equal(seen.events[3]?.revision, r4);
      assertIncreasing(seen.events);
    });

    test('list-then-watch-from-next-revision-misses-nothing-under-concurrent-writes', async (store) => {
      const writes: Promise<unknown>[] = [];
      const writer = async (worker: number): Promise<void> => {
        for (let i = 0; i < 60; i++) {
          const key = `c/${worker}-${i % 7}`;
          await (i % 5 === 4 ? store.delete(key) : store.put(key, `${worker}:${i}`));
        }
      };
      for (let worker = 0; worker < 4; worker++) writes.push(writer(worker));

      // Start the list + watch pair while the writers are mid-way.
      await store.put('c/0-0', 'seed');
      const listed = await store.list('c/');
      const mirror = new Map(listed.items.map((kv) => [kv.key, kv.value]));
      const seen = collect();
      const unwatch = await store.watch('c/', seen.onEvents, { fromRevision: listed.revision + 1 });

      await Promise.all(writes);
      const marker = await store.put('c/zz-marker', 'done');
      await seen.until((events) => events.some((e) => e.revision >= marker));
      await unwatch();

      assertIncreasing(seen.events);
      assert.ok(seen.events.some((e) => e.key !== 'c/zz-marker'), 'writes landed after the list, so the test raced for real');
      for (const event of seen.events) {
        assert.ok(event.revision > listed.revision, 'no event the list already covered');
        if (event.type === 'put') mirror.set(event.key, event.value);
        else mirror.delete(event.key);
      }
      const truth = await store.list('c/');
      assert.deepEqual([...mirror].sort(byKey), truth.items.map((kv) => [kv.key, kv.value]));
    });

    test('watch-from-revision-replays-history-then-streams-live-changes', async (store) => {
      const r1 = await store.put('h/a', '1');
      const r2 = await store.put('h/b', '2');
      await store.put('i/a', 'other prefix');
      assert.equal(await store.delete('h/a'), true);

      const all = collect();
      const unwatchAll = await store.watch('h/', all.onEvents, { fromRevision: r1 });
      const fromSecond = collect();
      const unwatchSecond = await store.watch('h/', fromSecond.onEvents, { fromRevision: r2 });
      const r4 = await store.put('h/c', 'live');
      await all.until((events) => events.some((e) => e.revision === r4));
      await fromSecond.until((events) => events.some((e) => e.revision === r4));
      await unwatchAll();
      await unwatchSecond();

      assert.deepEqual(all.events.map(describeEvent), ['put h/a=1', 'put h/b=2', 'delete h/a', 'put h/c=live']);
      const [e1, e2, e3, e4] = all.events.map((e) => e.revision);
      assert.deepEqual([e1, e2, e4], [r1, r2, r4], 'replayed events keep the revisions their writes returned');
      assert.ok(e3 !== undefined && e3 > r2 && e3 < r4, 'the delete sits between the writes around it');
      assert.deepEqual(fromSecond.events.map(describeEvent), ['put h/b=2', 'delete h/a', 'put h/c=live']);
    });

    test('unwatch-stops-delivery', async (store) => {
      const first = collect();
      const unwatchFirst = await store.watch('u/', first.onEvents);
      await store.put('u/1', 'before');
      await first.until((events) => events.length === 1);
      await unwatchFirst();

      // A second watcher proves the later change was delivered to whoever still listens.
      const second = collect();
      const unwatchSecond = await store.watch('u/', second.onEvents);
      await store.put('u/2', 'after');
      await second.until((events) => events.length === 1);
      await unwatchSecond();

      assert.deepEqual(first.events.map(describeEvent), ['put u/1=before']);
      assert.deepEqual(second.events.map(describeEvent), ['put u/2=after']);
      await unwatchFirst(); // a second unwatch is harmless
    });

    test('unwatch-drops-events-not-yet-delivered', async (store) => {
      const seen = collect();
      const unwatch = await store.watch('v/', seen.onEvents);
      const pending = store.put('v/1', 'x');
      await unwatch();
      await pending;
      const other = collect();
      const unwatchOther = await store.watch('v/', other.onEvents);
      await store.put('v/2', 'y');
      await other.until((events) => events.length === 1);
      await unwatchOther();
      assert.ok(seen.events.every((e) => e.key === 'v/1'), 'nothing after unwatch resolved');
    });

    test('a-throwing-watcher-breaks-neither-store-nor-other-watchers', async (store) => {
      let thrown = 0;
      const unwatchBad = await store.watch('t/', () => {
        thrown++;
        throw new Error('watcher bug');
      });
      const good = collect();
      const unwatchGood = await store.watch('t/', good.onEvents);
      await store.put('t/1', 'a');
      await good.until((events) => events.length === 1);
      await store.put('t/2', 'b');
      await good.until((events) => events.length === 2);
      await unwatchBad();
      await unwatchGood();
      assert.ok(thrown >= 1, 'the throwing watcher was called');
      assert.equal((await store.get('t/2'))?.value, 'b');
    });

    test('values-are-opaque-strings', async (store) => {
      const values: [string, string][] = [
        ['v/unicode', 'héllo wörld — 日本語 🚢 \u0000 "quoted" \\ \n\t end'],
        ['v/empty', ''],
        ['v/json-looking', '{"not":"parsed"}'],
        ['v/large', 'x'.repeat(1024 * 1024 - 3) + 'end'],
      ];
      const seen = collect();
      const unwatch = await store.watch('v/', seen.onEvents);
      for (const [key, value] of values) await store.put(key, value);
      await seen.until((events) => events.length === values.length);
      await unwatch();

      for (const [key, value] of values) {
        const got = await store.get(key);
        assert.equal(got?.value.length, value.length, `${key} keeps its length`);
        assert.ok(got.value === value, `${key} round-trips through get`);
      }
      const listed = new Map((await store.list('v/')).items.map((kv) => [kv.key, kv.value]));
      const watched = new Map(seen.events.map((e) => [e.key, e.type === 'put' ? e.value : undefined]));
      for (const [key, value] of values) {
        assert.ok(listed.get(key) === value, `${key} round-trips through list`);
        assert.ok(watched.get(key) === value, `${key} round-trips through watch`);
      }
    });

    test('unicode-keys-list-in-code-point-order', async (store) => {
      for (const key of ['k/é', 'k/z', 'k/🚢', 'k/\uffef', 'k/A']) await store.put(key, key);
      const keys = (await store.list('k/')).items.map((kv) => kv.key);
      assert.deepEqual(keys, ['k/A', 'k/z', 'k/é', 'k/\uffef', 'k/🚢']);
    });

    test('close-stops-watchers-and-later-operations-reject-with-store-closed', async (store) => {
      const seen = collect();
      await store.watch('z/', seen.onEvents);
      await store.put('z/1', 'x');
      await seen.until((events) => events.length === 1);
      await store.close();
      await store.close(); // idempotent

      const closed = (err: unknown): boolean => isBerthError(err, 'BERTH_ERR_STORE_CLOSED');
      await assert.rejects(store.get('z/1'), closed);
      await assert.rejects(store.put('z/2', 'y'), closed);
      await assert.rejects(store.delete('z/1'), closed);
      await assert.rejects(store.list('z/'), closed);
      await assert.rejects(store.watch('z/', () => undefined), closed);
      assert.equal(seen.events.length, 1);
    });
  });
}

interface Collector {
  readonly events: WatchEvent[];
  readonly onEvents: (batch: WatchEvent[]) => void;
  /** Resolves as soon as `done(events)` holds; checked on every batch. */
  until(done: (events: readonly WatchEvent[]) => boolean): Promise<void>;
}

function collect(): Collector {
  const events: WatchEvent[] = [];
  let waiter: { done: (events: readonly WatchEvent[]) => boolean; resolve: () => void } | undefined;
  let emptyBatches = 0;
  return {
    events,
    onEvents(batch) {
      // Recorded rather than asserted here: the store swallows what a watcher throws.
      if (batch.length === 0) emptyBatches++;
      events.push(...batch);
      if (waiter?.done(events)) {
        waiter.resolve();
        waiter = undefined;
      }
    },
    async until(done) {
      if (!done(events)) await new Promise<void>((resolve) => (waiter = { done, resolve }));
      assert.equal(emptyBatches, 0, 'a batch is never empty');
    },
  };
}

function describeEvent(event: WatchEvent): string {
  return event.type === 'put' ? `put ${event.key}=${event.value}` : `delete ${event.key}`;
}

function assertIncreasing(events: readonly WatchEvent[]): void {
  for (let i = 1; i < events.length; i++) {
    const prev = events[i - 1]?.revision ?? 0;
    const cur = events[i]?.revision ?? 0;
    assert.ok(cur > prev, `revisions increase: ${prev} then ${cur}`);
  }
}

function byKey(a: [string, string], b: [string, string]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}
