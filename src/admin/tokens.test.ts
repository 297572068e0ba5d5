import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EmbeddedStore } from '../catalog/stores/embedded.js';
import { FakeClock } from '../testing/fake-clock.js';
import { ADMIN_TOKEN_FILE, AdminTokens, hashSecret, readTokenFile, ROLES, roleAtLeast, TOKEN_PREFIX, writeTokenFile } from './tokens.js';

/** Lets the store deliver its watch events (queued as microtasks). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('admin tokens', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-tokens-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function open(name: string, clock = new FakeClock()): Promise<{ store: EmbeddedStore; tokens: AdminTokens; close: () => Promise<void> }> {
    const store = await EmbeddedStore.open({ dir: join(dir, name), clock });
    const tokens = await AdminTokens.open(store, { clock });
    return {
      store,
      tokens,
      close: async () => {
        await tokens.close();
        await store.close();
      },
    };
  }

  it('orders-roles-viewer-operator-admin', () => {
    assert.deepEqual([...ROLES], ['viewer', 'operator', 'admin']);
    assert.ok(roleAtLeast('admin', 'viewer'));
    assert.ok(roleAtLeast('operator', 'operator'));
    assert.ok(!roleAtLeast('viewer', 'operator'));
    assert.ok(!roleAtLeast('operator', 'admin'));
  });

  it('creates-a-berth-secret-and-stores-only-its-sha256', async () => {
    const { store, tokens, close } = await open('hash');
    const { token, secret } = await tokens.create('ci', 'operator');
    assert.match(secret, /^berth_[A-Za-z0-9_-]{43}$/);
    assert.match(token.id, /^tok_[0-9a-f]{12}$/);
    assert.deepEqual(Object.keys(token).sort(), ['createdAt', 'id', 'name', 'role']);
    const stored = await store.list(TOKEN_PREFIX);
    assert.equal(stored.items.length, 1);
    const raw = stored.items[0]?.value ?? '';
    assert.ok(!raw.includes(secret), 'the store never holds the secret');
    assert.equal((JSON.parse(raw) as { sha256: string }).sha256, hashSecret(secret));
    await close();
  });

  it('verifies-its-own-secrets-only-and-refuses-a-revoked-one', async () => {
    const { tokens, close } = await open('verify');
    const a = await tokens.create('a', 'viewer');
    const b = await tokens.create('b', 'admin');
    assert.equal(tokens.verify(a.secret)?.id, a.token.id);
    assert.equal(tokens.verify(b.secret)?.role, 'admin');
    assert.equal(tokens.verify(`${a.secret}x`), undefined);
    assert.equal(tokens.verify('berth_nope'), undefined);
    assert.equal(tokens.verify(''), undefined);
    assert.equal(await tokens.revoke(a.token.id), true);
    assert.equal(tokens.verify(a.secret), undefined, 'refused as soon as revoke resolves');
    assert.equal(await tokens.revoke(a.token.id), false);
    assert.deepEqual(tokens.list().map((t) => t.name), ['b']);
    await close();
  });

  it('refuses-bad-names-and-roles', async () => {
    const { tokens, close } = await open('names');
    await assert.rejects(tokens.create('', 'viewer'), TypeError);
    await assert.rejects(tokens.create('has space', 'viewer'), TypeError);
    await assert.rejects(tokens.create('x'.repeat(65), 'viewer'), TypeError);
    await assert.rejects(tokens.create('ok', 'root' as 'admin'), TypeError);
    await close();
  });

  it('survives-a-restart-of-the-store', async () => {
    const first = await open('restart');
    const { token, secret } = await first.tokens.create('kept', 'operator');
    await first.close();
    const second = await open('restart');
    assert.equal(second.tokens.verify(secret)?.id, token.id);
    assert.ok(second.tokens.has('operator'));
    assert.ok(!second.tokens.has('admin'));
    await second.close();
  });

  it('sees-tokens-created-and-revoked-by-another-user-of-the-store', async () => {
    const clock = new FakeClock();
    const store = await EmbeddedStore.open({ dir: join(dir, 'shared'), clock });
    const one = await AdminTokens.open(store, { clock });
    const two = await AdminTokens.open(store, { clock });
    const { token, secret } = await one.create('shared', 'viewer');
    await settle();
    assert.equal(two.verify(secret)?.id, token.id);
    await one.revoke(token.id);
    await settle();
    assert.equal(two.verify(secret), undefined);
    await one.close();
    await two.close();
    await store.close();
  });

  it('writes-last-used-at-most-once-a-minute-and-never-revives-a-revoked-token', async () => {
    const clock = new FakeClock();
    const { store, tokens, close } = await open('used', clock);
    const { token, secret } = await tokens.create('busy', 'viewer');
    const revision = store.revision;
    tokens.verify(secret);
    const firstUse = new Date(clock.now()).toISOString();
    assert.equal(tokens.get(token.id)?.lastUsedAt, firstUse);
    clock.advance(30_000);
    for (let i = 0; i < 10; i++) tokens.verify(secret);
    await settle();
    assert.equal(store.revision, revision + 1, 'one write for eleven uses within a minute');
    assert.equal(tokens.get(token.id)?.lastUsedAt, firstUse);
    clock.advance(31_000);
    tokens.verify(secret);
    await settle();
    assert.equal(store.revision, revision + 2);
    assert.equal(tokens.get(token.id)?.lastUsedAt, new Date(clock.now()).toISOString());

    await tokens.revoke(token.id);
    await settle();
    assert.deepEqual((await store.list(TOKEN_PREFIX)).items, [], 'the record and its last use are gone');
    await close();
  });

  it('writes-the-token-file-with-mode-0600-and-reads-it-back', async () => {
    const path = await writeTokenFile(dir, 'berth_secret');
    assert.equal(path, join(dir, ADMIN_TOKEN_FILE));
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal(await readFile(path, 'utf8'), 'berth_secret\n');
    assert.equal(await readTokenFile(dir), 'berth_secret');
    await writeTokenFile(dir, 'berth_other');
    assert.equal(await readTokenFile(dir), 'berth_other', 'replaced whole');
    assert.equal(await readTokenFile(join(dir, 'missing')), undefined);
  });
});
