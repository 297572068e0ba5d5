import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildAdminApi } from '../../admin/api.js';
import { isBerthError } from '../../errors.js';
import { openAdminFixture, type AdminFixture } from '../../testing/admin-node.js';
import { ExitCode } from '../exit-codes.js';
import { apiKeyCreate, apiKeyList, apiKeyRevoke } from './apikey.js';

const MANIFEST = 'groups:\n  payments:\n    services:\n      charges: { command: node c.js }\n  stock:\n    services:\n      inventory: { command: node i.js }\n';

/** A stream that keeps what is written to it. */
function sink(): PassThrough & { text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return Object.assign(stream, { text: () => Buffer.concat(chunks).toString('utf8') });
}

describe('berth apikey', () => {
  let fixture: AdminFixture;
  let app: FastifyInstance;
  let node: { file: string; admin: string; token: string };

  before(async () => {
    fixture = await openAdminFixture(MANIFEST, 'berth-cli-apikey-');
    app = buildAdminApi(fixture.deps);
    node = { file: join(fixture.dir, 'berth.yaml'), admin: await fixture.listen(app), token: fixture.security.secrets.admin };
  });

  after(async () => {
    await app.close();
    await fixture.close();
  });

  it('creates-a-key-printing-the-secret-alone-on-stdout-and-lists-it-without-the-secret', async () => {
    const out = sink();
    const err = sink();
    const code = await apiKeyCreate({ ...node, name: 'batch', groups: ['payments', 'stock'], subject: 'svc:batch', roles: ['batch'], scopes: ['a', 'b'] }, out, err);
    assert.equal(code, ExitCode.OK);
    const secret = out.text().trim();
    assert.match(secret, /^bk_[A-Za-z0-9_-]{43}$/, 'stdout holds the secret and nothing else');
    assert.match(err.text(), /created API key "batch" for group payments, group stock, id key_[0-9a-f]{12}; .*shown this once/);
    assert.ok(fixture.security.apiKeys.verify(secret, 'stock').ok);

    const table = sink();
    assert.equal(await apiKeyList(node, table), ExitCode.OK);
    const [header, row] = table.text().trimEnd().split('\n');
    assert.match(header ?? '', /^ID +NAME +GROUPS +SUBJECT +ROLES +SCOPES +CREATED +LAST USED$/);
    assert.match(row ?? '', /^key_[0-9a-f]{12} +batch +payments,stock +svc:batch +batch +a,b +\d{4}-\d\d-\d\d \d\d:\d\d +\d{4}-\d\d-\d\d \d\d:\d\d$/);
    assert.ok(!table.text().includes(secret));

    const json = sink();
    await apiKeyList({ ...node, json: true }, json);
    const listed = JSON.parse(json.text()) as { id: string; name: string }[];
    assert.deepEqual(listed.map((k) => k.name), ['batch']);
    assert.ok(!json.text().includes(secret));
  });

  it('revokes-a-key-and-exits-not-found-for-an-unknown-id', async () => {
    const out = sink();
    await apiKeyCreate({ ...node, name: 'short-lived', groups: ['*'], json: true }, out, sink());
    const created = JSON.parse(out.text()) as { id: string; secret: string };
    const revoked = sink();
    assert.equal(await apiKeyRevoke({ ...node, id: created.id }, revoked, sink()), ExitCode.OK);
    assert.equal(revoked.text(), `revoked ${created.id}\n`);
    assert.deepEqual(fixture.security.apiKeys.verify(created.secret, 'payments'), { ok: false, reason: 'unknown' });
    const err = sink();
    assert.equal(await apiKeyRevoke({ ...node, id: created.id }, sink(), err), ExitCode.NOT_FOUND);
    assert.match(err.text(), /no API key with id/);
  });

  it('is-refused-to-a-viewer', async () => {
    await assert.rejects(apiKeyCreate({ ...node, token: fixture.security.secrets.viewer, name: 'x', groups: ['payments'] }, sink(), sink()), (e) => isBerthError(e, 'BERTH_ERR_FORBIDDEN'));
  });
});
