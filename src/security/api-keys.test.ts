import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EmbeddedStore } from '../catalog/stores/embedded.js';
import { FakeClock } from '../testing/fake-clock.js';
import { APIKEY_PREFIX, ApiKeys } from './api-keys.js';

/** Lets the store deliver its watch events (queued as microtasks). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

describe('API keys', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-apikeys-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function open(name: string, clock = new FakeClock()): Promise<{ store: EmbeddedStore; keys: ApiKeys; close: () => Promise<void> }> {
    const store = await EmbeddedStore.open({ dir: join(dir, name), clock });
    const keys = await ApiKeys.open(store, { clock });
    return {
      store,
      keys,
      close: async () => {
        await keys.close();
        await store.close();
      },
    };
  }

  it('creates-a-bk-secret-and-stores-only-its-sha256', async () => {
    const { store, keys, close } = await open('hash');
    const { key, secret } = await keys.create({ name: 'billing-batch', groups: ['payments'], roles: ['batch'], scopes: ['charges:write'] });
    assert.match(secret, /^bk_[A-Za-z0-9_-]{43}$/);
    assert.match(key.id, /^key_[0-9a-f]{12}$/);
    assert.deepEqual({ ...key, id: undefined, createdAt: undefined }, { id: undefined, name: 'billing-batch', groups: ['payments'], subject: 'billing-batch', roles: ['batch'], scopes: ['charges:write'], createdAt: undefined });
    const stored = await store.list(APIKEY_PREFIX);
    assert.equal(stored.items.length, 1);
    const raw = stored.items[0]?.value ?? '';
    assert.ok(!raw.includes(secret), 'the store never holds the secret');
    assert.equal((JSON.parse(raw) as { sha256: string }).sha256, sha256(secret));
    assert.ok(keys.list().every((k) => !('sha256' in k) && !('secret' in k)));
    await close();
  });

  it('verifies-a-key-for-its-groups-only-with-its-identity', async () => {
    const { keys, close } = await open('verify');
    const one = await keys.create({ name: 'one', groups: ['payments', 'stock'], subject: 'svc:one', roles: ['reader'] });
    const all = await keys.create({ name: 'all', groups: ['*'] });
    const check = keys.verify(one.secret, 'stock');
    assert.ok(check.ok);
    assert.equal(check.keyId, one.key.id);
    assert.deepEqual(check.identity, { kind: 'apikey', subject: 'svc:one', issuer: null, roles: ['reader'], scopes: [], claims: { sub: 'svc:one', key_id: one.key.id, key_name: 'one' } });
    assert.ok(Object.isFrozen(check.identity) && Object.isFrozen(check.identity.roles), 'one identity object serves every request: it cannot be changed');
    assert.equal(keys.verify(one.secret, 'payments'), check, 'the same answer object every time: nothing allocated per request');
    assert.deepEqual(keys.verify(one.secret, 'admin'), { ok: false, reason: 'not-for-group' });
    assert.ok(keys.verify(all.secret, 'anything').ok, '"*" opens every group');
    assert.deepEqual(keys.verify(`${one.secret}x`, 'stock'), { ok: false, reason: 'unknown' });
    assert.deepEqual(keys.verify('', 'stock'), { ok: false, reason: 'unknown' });
    assert.equal(await keys.revoke(one.key.id), true);
    assert.deepEqual(keys.verify(one.secret, 'stock'), { ok: false, reason: 'unknown' }, 'refused as soon as revoke resolves');
    assert.equal(await keys.revoke(one.key.id), false);
    assert.deepEqual(keys.list().map((k) => k.name), ['all']);
    await close();
  });

  it('refuses-bad-names-groups-subjects-roles-and-scopes', async () => {
    const { keys, close } = await open('names');
    const bad = [
      { name: '', groups: ['a'] },
      { name: 'has space', groups: ['a'] },
      { name: 'ok', groups: [] },
      { name: 'ok', groups: ['Payments'] },
      { name: 'ok', groups: ['a'], subject: 'line\nbreak' },
      { name: 'ok', groups: ['a'], roles: ['a,b'] },
      { name: 'ok', groups: ['a'], scopes: ['two words'] },
    ];
    for (const input of bad) await assert.rejects(keys.create(input), TypeError, JSON.stringify(input));
    assert.deepEqual(keys.list(), []);
    await close();
  });

  it('survives-a-restart-of-the-store', async () => {
    const first = await open('restart');
    const { key, secret } = await first.keys.create({ name: 'kept', groups: ['payments'] });
    await first.close();
    const second = await open('restart');
    assert.deepEqual(second.keys.get(key.id), key);
    const check = second.keys.verify(secret, 'payments');
    assert.ok(check.ok);
    assert.equal(check.keyId, key.id);
    await second.close();
  });

  it('sees-keys-created-and-revoked-by-another-user-of-the-store', async () => {
    const clock = new FakeClock();
    const store = await EmbeddedStore.open({ dir: join(dir, 'shared'), clock });
    const one = await ApiKeys.open(store, { clock });
    const two = await ApiKeys.open(store, { clock });
    const { key, secret } = await one.create({ name: 'shared', groups: ['payments'] });
    await settle();
    assert.ok(two.verify(secret, 'payments').ok);
    await one.revoke(key.id);
    await settle();
    assert.deepEqual(two.verify(secret, 'payments'), { ok: false, reason: 'unknown' });
    await one.close();
    await two.close();
    await store.close();
  });

  it('skips-an-unreadable-record-and-says-so', async () => {
    const clock = new FakeClock();
    const store = await EmbeddedStore.open({ dir: join(dir, 'unreadable'), clock });
    await store.put(`${APIKEY_PREFIX}key_000000000000`, '{"id":"key_000000000000"}');
    const errors: unknown[] = [];
    const keys = await ApiKeys.open(store, { clock, onError: (err) => errors.push(err) });
    assert.deepEqual(keys.list(), []);
    assert.match(String(errors[0]), /unreadable API key record apikeys\/key_000000000000/);
    await keys.close();
    await store.close();
  });

  it('writes-last-used-at-most-once-a-minute-and-never-revives-a-revoked-key', async () => {
    const clock = new FakeClock();
    const { store, keys, close } = await open('used', clock);
    const { key, secret } = await keys.create({ name: 'busy', groups: ['payments'] });
    const revision = store.revision;
    keys.verify(secret, 'payments');
    const firstUse = new Date(clock.now()).toISOString();
    assert.equal(keys.get(key.id)?.lastUsedAt, firstUse);
    clock.advance(30_000);
    for (let i = 0; i < 10; i++) keys.verify(secret, 'payments');
    keys.verify(secret, 'stock');
    await settle();
    assert.equal(store.revision, revision + 1, 'one write for eleven uses within a minute');
    clock.advance(31_000);
    keys.verify(secret, 'payments');
    await settle();
    assert.equal(store.revision, revision + 2);
    assert.equal(keys.get(key.id)?.lastUsedAt, new Date(clock.now()).toISOString());

    await keys.revoke(key.id);
    await settle();
    assert.deepEqual((await store.list(APIKEY_PREFIX)).items, [], 'the record and its last use are gone');
    await close();
  });
});
