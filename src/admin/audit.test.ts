import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { AUDIT_FILE, AuditLog, maskSecrets, readTail, type AuditEntry } from './audit.js';

function entry(n: number, extra: Partial<AuditEntry> = {}): AuditEntry {
  return { time: new Date(1_700_000_000_000 + n).toISOString(), requestId: `r-${n}`, actor: 'anonymous', actorId: null, role: null, method: 'POST', route: '/v1/reload', params: {}, status: 401, ...extra };
}

describe('audit log', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-audit-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('appends-one-json-line-per-call-and-logs-it-as-admin-audit', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
        done();
      },
    });
    const logDir = join(dir, 'one');
    await mkdir(logDir);
    const audit = await AuditLog.open(logDir, pino({ level: 'info' }, sink));
    const ops = { actor: 'ops', actorId: 'tok_1', role: 'operator' as const, status: 200 };
    audit.record(entry(1));
    audit.record(entry(2, ops));
    assert.deepEqual(await audit.tail(10), [entry(1), entry(2, ops)]);
    await audit.close();
    const file = join(logDir, AUDIT_FILE);
    assert.equal((await readFile(file, 'utf8')).split('\n').length, 3);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.deepEqual(lines.map((l) => [l.event, l.level, l.actor, l.status]), [
      ['admin.audit', 30, 'anonymous', 401],
      ['admin.audit', 30, 'ops', 200],
    ]);
    assert.match(String(lines[1]?.msg), /^POST \/v1\/reload → 200 by ops \(operator, tok_1\)$/);
  });

  it('reads-the-last-entries-across-read-chunks-and-skips-a-torn-line', async () => {
    const file = join(dir, 'tail.log');
    // Long lines, so that the tail spans several 64 KiB chunks; one multi-byte character on each.
    const body = { note: `é${'x'.repeat(3000)}` };
    const all = Array.from({ length: 200 }, (_, i) => entry(i, { body }));
    await appendFile(file, `${all.map((e) => JSON.stringify(e)).join('\n')}\n{"torn`);
    const last = await readTail(file, 50);
    assert.deepEqual(last.map((e) => e.requestId), all.slice(-49).map((e) => e.requestId), 'the torn line counts as a line but is no entry');
    assert.equal(last.length, 49);
    assert.equal((await readTail(file, 1000)).length, 200);
    assert.deepEqual(await readTail(join(dir, 'missing.log'), 10), []);
  });

  it('masks-secret-like-fields-at-any-depth', () => {
    assert.deepEqual(maskSecrets({ name: 'ci', role: 'viewer', nested: { apiKey: 'k', password: 'p', list: [{ token: 't' }] }, secretThing: 's' }), {
      name: 'ci',
      role: 'viewer',
      nested: { apiKey: '[redacted]', password: '[redacted]', list: [{ token: '[redacted]' }] },
      secretThing: '[redacted]',
    });
    assert.equal(maskSecrets('plain'), 'plain');
  });
});
