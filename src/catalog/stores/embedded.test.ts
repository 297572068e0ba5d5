import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isBerthError } from '../../errors.js';
import { FakeClock } from '../../testing/fake-clock.js';
import type { WatchEvent } from '../store.js';
import { storeContract } from '../store-contract.js';
import { EmbeddedStore } from './embedded.js';

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-embedded-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

storeContract('embedded', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-embedded-contract-'));
  // Watcher exceptions are part of the contract; keep them out of the test output.
  const store = await EmbeddedStore.open({ dir, onError: () => undefined });
  return {
    store,
    async cleanup() {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('embedded store', () => {
  it('survives-close-and-reopen-with-entries-and-revision', () =>
    withDir(async (dir) => {
      const first = await EmbeddedStore.open({ dir });
      const ra = await first.put('instances/a', '{"id":"a"}');
      await first.put('instances/b', 'b');
      await first.put('instances/c', 'c');
      await first.delete('instances/b');
      const revision = first.revision;
      await first.close();

      const second = await EmbeddedStore.open({ dir });
      try {
        const listed = await second.list('instances/');
        assert.equal(listed.revision, revision, 'the revision survives, deletes included');
        assert.deepEqual(listed.items.map((kv) => kv.key), ['instances/a', 'instances/c']);
        assert.deepEqual(await second.get('instances/a'), { key: 'instances/a', value: '{"id":"a"}', revision: ra });
        assert.ok((await second.put('instances/d', 'd')) > revision, 'revisions keep growing across restarts');
      } finally {
        await second.close();
      }
    }));

  it('creates-a-missing-data-dir-and-honours-the-file-name', () =>
    withDir(async (parent) => {
      const dir = join(parent, 'nested', 'data');
      const store = await EmbeddedStore.open({ dir, file: 'catalog.json' });
      await store.put('k', 'v');
      await store.close();
      assert.deepEqual(await readdir(dir), ['catalog.json']);
      const doc = JSON.parse(await readFile(join(dir, 'catalog.json'), 'utf8')) as unknown;
      assert.deepEqual(doc, { version: 1, revision: 1, entries: { k: { value: 'v', revision: 1 } } });
    }));

  it('an-empty-dir-opens-as-an-empty-store-and-writes-nothing-until-changed', () =>
    withDir(async (dir) => {
      const store = await EmbeddedStore.open({ dir });
      assert.deepEqual(await store.list(''), { items: [], revision: 0 });
      await store.close();
      assert.deepEqual(await readdir(dir), []);
      assert.equal(store.writes, 0);
    }));

  it('writes-atomically-and-leaves-no-temp-files', () =>
    withDir(async (dir) => {
      // A temp file left by a write that a crash interrupted.
      await writeFile(join(dir, '.store.json.999.deadbeef.tmp'), '{"version":1,"rev');
      const store = await EmbeddedStore.open({ dir, flushDelayMs: 0 });
      for (let round = 0; round < 20; round++) {
        await store.put(`k/${round}`, 'x'.repeat(round * 100));
        await store.flush();
        assert.deepEqual(await readdir(dir), ['store.json'], `only the store file after write ${round}`);
        const doc = JSON.parse(await readFile(store.path, 'utf8')) as { revision: number };
        assert.equal(doc.revision, round + 1, 'every flush leaves a whole, current file');
      }
      await store.close();
      assert.equal(store.writes, 20);
      assert.deepEqual(await readdir(dir), ['store.json']);
    }));

  it('coalesces-a-burst-of-changes-into-one-write', () =>
    withDir(async (dir) => {
      const clock = new FakeClock();
      const store = await EmbeddedStore.open({ dir, flushDelayMs: 50, clock });
      for (let i = 0; i < 500; i++) await store.put(`k/${i % 50}`, String(i));
      assert.equal(clock.pendingTimers, 1, 'one debounce timer for the whole burst');
      assert.equal(store.writes, 0, 'nothing written before the debounce');

      clock.advance(50); // starts the write
      await store.flush(); // waits for it; nothing is left to write
      assert.equal(store.writes, 1);
      assert.equal(clock.pendingTimers, 0);

      await store.close();
      assert.equal(store.writes, 1, 'close has nothing more to write');
      const doc = JSON.parse(await readFile(store.path, 'utf8')) as { revision: number };
      assert.equal(doc.revision, 500);
    }));

  it('changes-during-a-write-cost-exactly-one-more-write', () =>
    withDir(async (dir) => {
      const clock = new FakeClock();
      const store = await EmbeddedStore.open({ dir, flushDelayMs: 50, clock });
      await store.put('k/seed', 'seed');
      const inFlight = store.flush();
      // These land while the first write is in flight: they wait as one pending write.
      const puts: Promise<number>[] = [];
      for (let i = 0; i < 300; i++) puts.push(store.put(`k/${i}`, String(i)));
      await Promise.all(puts);
      await inFlight;
      assert.equal(store.writes, 1);
      await store.close();
      assert.equal(store.writes, 2);

      const reopened = await EmbeddedStore.open({ dir });
      try {
        assert.equal((await reopened.list('k/')).items.length, 301, 'the pending write carried every change');
      } finally {
        await reopened.close();
      }
    }));

  it('close-flushes-pending-changes', () =>
    withDir(async (dir) => {
      const store = await EmbeddedStore.open({ dir, flushDelayMs: 60_000 });
      await store.put('k', 'pending');
      await store.close();
      const reopened = await EmbeddedStore.open({ dir });
      try {
        assert.equal((await reopened.get('k'))?.value, 'pending');
      } finally {
        await reopened.close();
      }
    }));

  it('odd-keys-and-values-survive-the-file', () =>
    withDir(async (dir) => {
      const pairs: [string, string][] = [
        ['__proto__', 'not a prototype'],
        ['constructor', ''],
        ['123', 'numeric-looking key'],
        ['k/🚢', 'line\nbreak "quotes" \u0000 nul'],
      ];
      const store = await EmbeddedStore.open({ dir });
      for (const [key, value] of pairs) await store.put(key, value);
      await store.close();
      const reopened = await EmbeddedStore.open({ dir });
      try {
        for (const [key, value] of pairs) assert.equal((await reopened.get(key))?.value, value, key);
        assert.equal((await reopened.list('')).items.length, pairs.length);
      } finally {
        await reopened.close();
      }
    }));

  for (const [title, content, problem] of [
    ['invalid-json', '{"version":1,"revision":3,"entries":{', /invalid JSON/],
    ['not-an-object', '[1,2,3]', /JSON object/],
    ['unknown-version', '{"version":7,"revision":0,"entries":{}}', /unsupported version 7/],
    ['entry-newer-than-store', '{"version":1,"revision":2,"entries":{"a":{"value":"x","revision":5}}}', /entries\["a"\]\.revision/],
    ['value-not-a-string', '{"version":1,"revision":2,"entries":{"a":{"value":42,"revision":1}}}', /entries\["a"\]\.value/],
    ['empty-file', '', /invalid JSON/],
  ] as const) {
    it(`corrupt-file-${title}-is-refused-and-left-untouched`, () =>
      withDir(async (dir) => {
        const path = join(dir, 'store.json');
        await writeFile(path, content);
        await assert.rejects(EmbeddedStore.open({ dir }), (err: unknown) => {
          assert.ok(isBerthError(err, 'BERTH_ERR_STORE_CORRUPT'), `a BerthError STORE_CORRUPT, got ${String(err)}`);
          assert.ok(err.message.includes(path), `names the file: ${err.message}`);
          assert.match(err.message, problem);
          assert.equal(err.details[0]?.where, path);
          return true;
        });
        assert.equal(await readFile(path, 'utf8'), content, 'the file is unchanged');
        assert.deepEqual(await readdir(dir), ['store.json'], 'nothing else was written');
      }));
  }

  it('invalid-utf8-is-corrupt', () =>
    withDir(async (dir) => {
      const bytes = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
      await writeFile(join(dir, 'store.json'), bytes);
      await assert.rejects(EmbeddedStore.open({ dir }), (err: unknown) => isBerthError(err, 'BERTH_ERR_STORE_CORRUPT') && /UTF-8/.test(err.message));
      assert.deepEqual(await readFile(join(dir, 'store.json')), bytes);
    }));

  it('watch-from-a-compacted-revision-fails-with-store-compacted', () =>
    withDir(async (dir) => {
      const store = await EmbeddedStore.open({ dir, historyLimit: 10 });
      try {
        for (let i = 1; i <= 45; i++) await store.put(`k/${i}`, String(i));
        await assert.rejects(store.watch('k/', () => undefined, { fromRevision: 1 }), (err: unknown) => isBerthError(err, 'BERTH_ERR_STORE_COMPACTED') && /revision 1\b/.test(err.message));

        // The newest `historyLimit` changes are always replayable.
        const events: WatchEvent[] = [];
        let resolve!: () => void;
        const all = new Promise<void>((r) => (resolve = r));
        const unwatch = await store.watch('k/', (batch) => {
          events.push(...batch);
          if (events.length === 10) resolve();
        }, { fromRevision: 36 });
        await all;
        await unwatch();
        assert.deepEqual(events.map((e) => e.revision), [36, 37, 38, 39, 40, 41, 42, 43, 44, 45]);
      } finally {
        await store.close();
      }
    }));

  it('history-does-not-survive-a-restart', () =>
    withDir(async (dir) => {
      const first = await EmbeddedStore.open({ dir });
      await first.put('k', '1');
      await first.put('k', '2');
      await first.close();
      const second = await EmbeddedStore.open({ dir });
      try {
        await assert.rejects(second.watch('k', () => undefined, { fromRevision: 1 }), (err: unknown) => isBerthError(err, 'BERTH_ERR_STORE_COMPACTED'));
        const unwatch = await second.watch('k', () => undefined, { fromRevision: 3 });
        await unwatch();
      } finally {
        await second.close();
      }
    }));

  it('a-throwing-watcher-is-reported-to-onError', () =>
    withDir(async (dir) => {
      const reported: unknown[] = [];
      let resolve!: () => void;
      const got = new Promise<void>((r) => (resolve = r));
      const store = await EmbeddedStore.open({ dir, onError: (err) => reported.push(err) });
      try {
        await store.watch('k', () => {
          throw new Error('watcher bug');
        });
        await store.watch('k', () => resolve());
        await store.put('k', 'v');
        await got;
        assert.equal(reported.length, 1);
        assert.match((reported[0] as Error).message, /watcher bug/);
      } finally {
        await store.close();
      }
    }));

  it('a-synchronous-burst-reaches-a-watcher-as-one-batch', () =>
    withDir(async (dir) => {
      const store = await EmbeddedStore.open({ dir });
      try {
        const batches: WatchEvent[][] = [];
        let resolve!: () => void;
        const got = new Promise<void>((r) => (resolve = r));
        await store.watch('b/', (batch) => {
          batches.push(batch);
          resolve();
        });
        const puts = [store.put('b/1', '1'), store.put('b/2', '2'), store.delete('b/1')];
        await Promise.all(puts);
        await got;
        assert.equal(batches.length, 1);
        assert.deepEqual(batches[0]?.map((e) => `${e.type} ${e.key}`), ['put b/1', 'put b/2', 'delete b/1']);
      } finally {
        await store.close();
      }
    }));
});
