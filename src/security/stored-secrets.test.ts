import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EmbeddedStore } from '../catalog/stores/embedded.js';
import { FakeClock } from '../testing/fake-clock.js';
import { hashSecret, StoredSecrets, type StoredSecret } from './stored-secrets.js';

/** Lets the store deliver its watch events (queued as microtasks). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const KIND = { prefix: 'things/', noun: 'thing', read: ({ id, name, createdAt, sha256 }: StoredSecret): StoredSecret => ({ id, name, createdAt, sha256 }) };

const record = (id: string, secret = `s-${id}`): StoredSecret => ({ id, name: id, createdAt: '2024-05-01T00:00:00.000Z', sha256: hashSecret(secret) });

describe('stored secrets', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-stored-secrets-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lists-in-creation-order-by-store-revision-not-by-id-here-and-on-another-reader', async () => {
    const clock = new FakeClock();
    const store = await EmbeddedStore.open({ dir: join(dir, 'order'), clock });
    const writer = await StoredSecrets.open(store, KIND, { clock });
    for (const id of ['c', 'a', 'b']) await writer.add(record(id));
    const opened = await StoredSecrets.open(store, KIND, { clock });
    await writer.add(record('0'));
    await settle();
    assert.deepEqual(writer.list().map((r) => r.id), ['c', 'a', 'b', '0']);
    assert.deepEqual(opened.list().map((r) => r.id), ['c', 'a', 'b', '0'], 'listed at open, then watched');
    await writer.close();
    await opened.close();
    await store.close();
  });

  it('forgets-the-old-secret-of-a-record-rewritten-under-the-same-id', async () => {
    const clock = new FakeClock();
    const store = await EmbeddedStore.open({ dir: join(dir, 'rewrite'), clock });
    const secrets = await StoredSecrets.open(store, KIND, { clock });
    await secrets.add(record('a', 'old'));
    await store.put('things/a', JSON.stringify(record('a', 'new')));
    await settle();
    assert.equal(secrets.find('old'), undefined);
    assert.equal(secrets.find('new')?.id, 'a');
    assert.equal([...secrets.values()].length, 1);
    await secrets.close();
    await store.close();
  });
});
