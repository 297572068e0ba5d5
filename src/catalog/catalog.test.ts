import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BerthError, isBerthError } from '../errors.js';
import type { CatalogChange } from './catalog.js';
import { Catalog, compareVersions, INSTANCE_PREFIX } from './catalog.js';
import type { Store } from './store.js';
import { EmbeddedStore } from './stores/embedded.js';
import type { InstanceRecord } from './types.js';
import { instanceRecord } from '../testing/instance-record.js';

function record(id: string, fields: Partial<InstanceRecord> = {}): InstanceRecord {
  return instanceRecord({
    id,
    group: 'payments',
    service: 'charges',
    lastCheck: { status: 'passing', output: 'HTTP 200', at: '2024-01-01T00:00:01.000Z', durationMs: 3 },
    ...fields,
  });
}

async function withStore(fn: (store: EmbeddedStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-catalog-'));
  const store = await EmbeddedStore.open({ dir });
  try {
    await fn(store, dir);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Resolves with the first change of `catalog` that satisfies `match`. */
function nextChange(catalog: Catalog, match: (change: CatalogChange) => boolean): Promise<CatalogChange> {
  return new Promise((resolve) => {
    const unsubscribe = catalog.subscribe((change) => {
      if (!match(change)) return;
      unsubscribe();
      resolve(change);
    });
  });
}

describe('catalog', () => {
  it('snapshot-follows-puts-and-deletes', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        assert.equal(catalog.get('a'), undefined);
        assert.deepEqual(catalog.list(), []);
        const before = catalog.revision;

        await catalog.put(record('a'));
        assert.deepEqual(catalog.get('a'), record('a'), 'visible as soon as put resolves');
        assert.ok(catalog.revision > before);
        assert.equal((await store.get(`${INSTANCE_PREFIX}a`))?.value, JSON.stringify(record('a')), 'stored as JSON under instances/<id>');

        await catalog.put(record('a', { status: 'critical' }));
        assert.equal(catalog.get('a')?.status, 'critical');

        await catalog.remove('a');
        assert.equal(catalog.get('a'), undefined, 'gone as soon as remove resolves');
        assert.equal(await store.get(`${INSTANCE_PREFIX}a`), undefined);
        await catalog.remove('a'); // removing twice is not an error
        assert.equal(catalog.size, 0);
      } finally {
        await catalog.close();
      }
    }));

  it('put-and-remove-resolve-only-once-the-snapshot-reflects-them', () =>
    withStore(async (store) => {
      // The embedded store delivers before a put's caller resumes; a networked store does not. Deliver late to prove the wait.
      const catalog = await Catalog.open(lateWatch(store));
      try {
        await catalog.put(record('late'));
        assert.equal(catalog.get('late')?.id, 'late');
        await catalog.remove('late');
        assert.equal(catalog.get('late'), undefined);
      } finally {
        await catalog.close();
      }
    }));

  it('loads-existing-records-on-open', () =>
    withStore(async (store) => {
      await store.put(`${INSTANCE_PREFIX}x`, JSON.stringify(record('x')));
      await store.put('other/y', 'not an instance');
      const revision = await store.put(`${INSTANCE_PREFIX}y`, JSON.stringify(record('y')));
      const catalog = await Catalog.open(store);
      try {
        assert.deepEqual(catalog.list().map((r) => r.id), ['x', 'y']);
        assert.equal(catalog.revision, revision);
      } finally {
        await catalog.close();
      }
    }));

  it('two-catalogs-on-one-store-see-each-others-writes', () =>
    withStore(async (store) => {
      const a = await Catalog.open(store);
      const b = await Catalog.open(store);
      try {
        const seenByB = nextChange(b, (c) => c.id === 'from-a');
        await a.put(record('from-a'));
        assert.equal((await seenByB).record?.id, 'from-a');
        assert.deepEqual(b.get('from-a'), record('from-a'));

        const seenByA = nextChange(a, (c) => c.id === 'from-a' && c.type === 'delete');
        await b.remove('from-a');
        await seenByA;
        assert.equal(a.get('from-a'), undefined);
        assert.equal(a.revision, b.revision);
      } finally {
        await a.close();
        await b.close();
      }
    }));

  it('remove-waits-for-a-delete-it-did-not-make', () =>
    withStore(async (store) => {
      const a = await Catalog.open(store);
      const b = await Catalog.open(lateWatch(store));
      try {
        await a.put(record('r'));
        await nextChangeOrPresent(b, 'r');
        // The store forgets the key before b hears of it; b.remove must still end with it gone from b.
        const deleted = store.delete(`${INSTANCE_PREFIX}r`);
        await b.remove('r');
        assert.equal(await deleted, true);
        assert.equal(b.get('r'), undefined);
      } finally {
        await a.close();
        await b.close();
      }
    }));

  it('list-filters-and-sorts-by-group-service-version-createdAt-id', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        const records = [
          record('c3', { version: '1.10.0' }),
          record('c1', { version: '1.9.0', createdAt: '2024-01-02T00:00:00.000Z' }),
          record('c2', { version: '1.9.0', createdAt: '2024-01-01T00:00:00.000Z' }),
          record('c0', { version: '1.9.0', createdAt: '2024-01-01T00:00:00.000Z', node: 'node-b' }),
          record('c4', { version: '2.0.0-rc.1', status: 'starting' }),
          record('c5', { version: '2.0.0', status: 'critical' }),
          record('p1', { service: 'payouts', status: 'stopped', node: 'node-b' }),
          record('u1', { group: 'users', service: 'profiles', version: '0.0.0' }),
          record('a1', { group: 'auth', service: 'tokens', status: 'draining' }),
        ];
        for (const r of records) await catalog.put(r);

        assert.deepEqual(catalog.list().map((r) => r.id), ['a1', 'c0', 'c2', 'c1', 'c3', 'c4', 'c5', 'p1', 'u1']);
        assert.deepEqual(catalog.list({ service: 'charges' }).map((r) => r.id), ['c0', 'c2', 'c1', 'c3', 'c4', 'c5']);
        assert.deepEqual(catalog.list({ group: 'payments', service: 'payouts' }).map((r) => r.id), ['p1']);
        assert.deepEqual(catalog.list({ node: 'node-b' }).map((r) => r.id), ['c0', 'p1']);
        assert.deepEqual(catalog.list({ statuses: ['starting', 'critical'] }).map((r) => r.id), ['c4', 'c5']);
        assert.deepEqual(catalog.list({ group: 'payments', statuses: ['passing'], node: 'node-a' }).map((r) => r.id), ['c2', 'c1', 'c3']);
        assert.deepEqual(catalog.list({ statuses: [] }), []);
        assert.deepEqual(catalog.list({ service: 'nope' }), []);

        // The sorted list is cached; a change must still show up in it.
        await catalog.put(record('a0', { group: 'auth', service: 'tokens' }));
        assert.equal(catalog.list()[0]?.id, 'a0');
        const copy = catalog.list();
        copy.length = 0;
        assert.equal(catalog.list().length, records.length + 1, 'callers get their own array');
      } finally {
        await catalog.close();
      }
    }));

  it('services-summarises-versions-instances-and-passing', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        await catalog.put(record('c1', { version: '1.10.0' }));
        await catalog.put(record('c2', { version: '1.9.0', status: 'critical' }));
        await catalog.put(record('c3', { version: '1.9.0' }));
        await catalog.put(record('u1', { group: 'users', service: 'profiles', version: '0.0.0', status: 'starting' }));
        assert.deepEqual(catalog.services(), [
          { group: 'payments', service: 'charges', versions: ['1.9.0', '1.10.0'], instances: 3, passing: 2 },
          { group: 'users', service: 'profiles', versions: ['0.0.0'], instances: 1, passing: 0 },
        ]);
      } finally {
        await catalog.close();
      }
    }));

  it('subscribe-gets-record-and-previous-and-unsubscribe-stops-it', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        const changes: CatalogChange[] = [];
        const seenInSnapshot: (InstanceRecord | undefined)[] = [];
        const unsubscribe = catalog.subscribe((change) => {
          changes.push(change);
          seenInSnapshot.push(catalog.get(change.id));
        });
        const first = record('s', { status: 'starting' });
        const second = record('s', { status: 'passing' });
        await catalog.put(first);
        await catalog.put(second);
        await catalog.remove('s');
        unsubscribe();
        await catalog.put(record('after'));

        assert.deepEqual(changes, [
          { type: 'put', id: 's', record: first },
          { type: 'put', id: 's', record: second, previous: first },
          { type: 'delete', id: 's', previous: second },
        ]);
        assert.deepEqual(seenInSnapshot, [first, second, undefined], 'listeners run after the snapshot changed');
      } finally {
        await catalog.close();
      }
    }));

  it('a-throwing-subscriber-does-not-stop-the-snapshot-or-other-subscribers', () =>
    withStore(async (store) => {
      const errors: unknown[] = [];
      const catalog = await Catalog.open(store, { onListenerError: (err) => errors.push(err) });
      try {
        catalog.subscribe(() => {
          throw new Error('subscriber bug');
        });
        const ids: string[] = [];
        catalog.subscribe((change) => ids.push(change.id));
        await catalog.put(record('one'));
        await catalog.put(record('two'));
        assert.deepEqual(ids, ['one', 'two']);
        assert.equal(errors.length, 2);
        assert.deepEqual(catalog.list().map((r) => r.id), ['one', 'two']);
      } finally {
        await catalog.close();
      }
    }));

  it('invalid-records-are-skipped-and-reported-through-onInvalid', () =>
    withStore(async (store) => {
      await store.put(`${INSTANCE_PREFIX}not-json`, '{oops');
      await store.put(`${INSTANCE_PREFIX}ok`, JSON.stringify(record('ok')));
      const invalid: [string, string][] = [];
      const catalog = await Catalog.open(store, { onInvalid: (key, err) => invalid.push([key, err.message]) });
      try {
        assert.deepEqual(catalog.list().map((r) => r.id), ['ok'], 'the bad record is left out at open');
        assert.equal(invalid.length, 1);
        assert.equal(invalid[0]?.[0], `${INSTANCE_PREFIX}not-json`);
        assert.match(invalid[0]?.[1] ?? '', /not JSON/);

        // Live: a wrong shape, a mismatched id, and a valid record overwritten by garbage.
        const removed = nextChange(catalog, (c) => c.id === 'ok' && c.type === 'delete');
        await store.put(`${INSTANCE_PREFIX}shape`, JSON.stringify({ ...record('shape'), port: 'eighty', status: 'asleep' }));
        await store.put(`${INSTANCE_PREFIX}mismatch`, JSON.stringify(record('someone-else')));
        await store.put(`${INSTANCE_PREFIX}ok`, 'null');
        await removed;

        assert.deepEqual(invalid.slice(1).map(([key]) => key), [`${INSTANCE_PREFIX}shape`, `${INSTANCE_PREFIX}mismatch`, `${INSTANCE_PREFIX}ok`]);
        assert.match(invalid[1]?.[1] ?? '', /port/);
        assert.match(invalid[1]?.[1] ?? '', /status/);
        assert.match(invalid[2]?.[1] ?? '', /does not match its key/);
        assert.deepEqual(catalog.list(), [], 'a record replaced by garbage leaves the snapshot');

        await catalog.put(record('still-works'));
        assert.equal(catalog.get('still-works')?.id, 'still-works');
      } finally {
        await catalog.close();
      }
    }));

  it('put-refuses-an-invalid-record-and-writes-nothing', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        const bad = { ...record('bad'), port: 70_000 };
        await assert.rejects(catalog.put(bad), (err: unknown) => isBerthError(err, 'BERTH_ERR_BAD_REQUEST') && err.details.some((d) => d.where === 'port'));
        assert.equal(await store.get(`${INSTANCE_PREFIX}bad`), undefined);
      } finally {
        await catalog.close();
      }
    }));

  it('snapshot-records-are-frozen', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        await catalog.put(record('f'));
        const got = catalog.get('f');
        assert.ok(got && Object.isFrozen(got) && Object.isFrozen(got.lastCheck));
        assert.throws(() => {
          (got as { status: string }).status = 'stopped';
        }, TypeError);
      } finally {
        await catalog.close();
      }
    }));

  it('records-survive-a-restart-on-the-same-data-dir', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-catalog-restart-'));
    try {
      const store = await EmbeddedStore.open({ dir });
      const catalog = await Catalog.open(store);
      await catalog.put(record('keep-1'));
      await catalog.put(record('keep-2', { status: 'critical' }));
      await catalog.put(record('gone'));
      await catalog.remove('gone');
      const revision = catalog.revision;
      await catalog.close();
      await store.close();

      const reopenedStore = await EmbeddedStore.open({ dir });
      const reopened = await Catalog.open(reopenedStore);
      try {
        assert.deepEqual(reopened.list(), [record('keep-1'), record('keep-2', { status: 'critical' })]);
        assert.equal(reopened.revision, revision);
        await reopened.put(record('new'));
        assert.ok(reopened.revision > revision);
      } finally {
        await reopened.close();
        await reopenedStore.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('close-stops-following-keeps-the-snapshot-and-leaves-the-store-open', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      await catalog.put(record('a'));
      let changes = 0;
      catalog.subscribe(() => changes++);
      await catalog.close();
      await catalog.close();

      await store.put(`${INSTANCE_PREFIX}b`, JSON.stringify(record('b')));
      const witness = await Catalog.open(store);
      try {
        assert.equal(witness.get('b')?.id, 'b', 'the store is still open');
      } finally {
        await witness.close();
      }
      assert.equal(catalog.get('b'), undefined, 'a closed catalog follows nothing');
      assert.equal(catalog.get('a')?.id, 'a', 'the last snapshot stays readable');
      assert.equal(changes, 0);
      await assert.rejects(catalog.put(record('c')), (err: unknown) => isBerthError(err, 'BERTH_ERR_CATALOG_CLOSED'));
      await assert.rejects(catalog.remove('a'), (err: unknown) => isBerthError(err, 'BERTH_ERR_CATALOG_CLOSED'));
    }));

  it('open-lists-again-when-the-store-compacted-between-list-and-watch', () =>
    withStore(async (store) => {
      let refusals = 1;
      const flaky: Store = {
        get: (key) => store.get(key),
        put: (key, value) => store.put(key, value),
        delete: (key) => store.delete(key),
        list: (prefix) => store.list(prefix),
        close: () => store.close(),
        watch: (prefix, onEvents, options) => {
          if (refusals-- > 0) return Promise.reject(new BerthError('BERTH_ERR_STORE_COMPACTED', 'compacted for the test'));
          return store.watch(prefix, onEvents, options);
        },
      };
      await store.put(`${INSTANCE_PREFIX}a`, JSON.stringify(record('a')));
      const catalog = await Catalog.open(flaky);
      try {
        assert.equal(catalog.get('a')?.id, 'a');
        await catalog.put(record('b'));
        assert.equal(catalog.size, 2);
      } finally {
        await catalog.close();
      }
    }));

  it('pruneHistory-keeps-the-newest-stopped-records-per-service', () =>
    withStore(async (store) => {
      const catalog = await Catalog.open(store);
      try {
        const at = (minute: number): string => `2024-01-01T00:${String(minute).padStart(2, '0')}:00.000Z`;
        for (let i = 1; i <= 5; i++) await catalog.put(record(`old-${i}`, { status: 'stopped', updatedAt: at(i) }));
        await catalog.put(record('live-1', { status: 'passing', updatedAt: at(0) }));
        await catalog.put(record('failed-1', { status: 'failed', updatedAt: at(0) }));
        await catalog.put(record('other-1', { service: 'payouts', status: 'stopped', updatedAt: at(0) }));
        await catalog.put(record('users-1', { group: 'users', service: 'charges', status: 'stopped', updatedAt: at(0) }));
        await catalog.put(record('users-2', { group: 'users', service: 'charges', status: 'stopped', updatedAt: at(1) }));
        await catalog.put(record('users-3', { group: 'users', service: 'charges', status: 'stopped', updatedAt: at(2) }));

        const removed = await catalog.pruneHistory({ keepPerService: 2 });

        assert.equal(removed, 4);
        assert.deepEqual(
          catalog.list().map((r) => r.id).sort(),
          ['failed-1', 'live-1', 'old-4', 'old-5', 'other-1', 'users-2', 'users-3'],
          'the two newest stopped per (group, service) stay; other statuses are never pruned',
        );
        assert.equal((await store.list(INSTANCE_PREFIX)).items.length, 7, 'deleted from the store, not only the snapshot');
        assert.equal(await catalog.pruneHistory({ keepPerService: 2 }), 0, 'nothing more to prune');
        assert.equal(await catalog.pruneHistory({ keepPerService: 0 }), 5);
        assert.deepEqual(catalog.list().map((r) => r.id), ['failed-1', 'live-1']);
      } finally {
        await catalog.close();
      }
    }));

  it('compareVersions-orders-by-semver-precedence', () => {
    const sorted = ['2.0.0', '1.10.0', 'latest', '1.9.0', '2.0.0-rc.10', '2.0.0-rc.2', '2.0.0-alpha', '0.0.0', 'canary'].sort(compareVersions);
    assert.deepEqual(sorted, ['0.0.0', '1.9.0', '1.10.0', '2.0.0-alpha', '2.0.0-rc.2', '2.0.0-rc.10', '2.0.0', 'canary', 'latest']);
  });
});

/** The same store, but each watch batch is delivered a macrotask late, as over a network. */
function lateWatch(store: Store): Store {
  return {
    get: (key) => store.get(key),
    put: (key, value) => store.put(key, value),
    delete: (key) => store.delete(key),
    list: (prefix) => store.list(prefix),
    close: () => store.close(),
    watch: async (prefix, onEvents, options) => {
      let active = true;
      const unwatch = await store.watch(prefix, (events) => setImmediate(() => active && onEvents(events)), options);
      return () => {
        active = false;
        return unwatch();
      };
    },
  };
}

/** Resolves when `id` is in the snapshot, now or after the next change. */
async function nextChangeOrPresent(catalog: Catalog, id: string): Promise<void> {
  if (catalog.get(id) !== undefined) return;
  await nextChange(catalog, (c) => c.id === id);
}
