/**
 * The admin API's tokens, roles and audit log on a real `berth up`, driven
 * through HTTP and the CLI as an operator would.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MUTATING_METHODS, ROUTE_ACCESS } from '../../src/admin/access.js';
import { AUDIT_FILE, type AuditEntry } from '../../src/admin/audit.js';
import { ADMIN_TOKEN_FILE, type TokenInfo } from '../../src/admin/tokens.js';
import { BerthProcess, makeProject, runCli, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    services:
      web:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms, startPeriod: 0s }
`);

const REGISTRATION = { id: 'ext-1', group: 'core', service: 'ledger', address: '127.0.0.1', port: 7001, ttl: '1m' };

/** A call for each mutating route of the table, its params filled in and a body that passes validation. */
const MUTATING = Object.keys(ROUTE_ACCESS)
  .filter((key) => MUTATING_METHODS.has(key.split(' ')[0] ?? ''))
  .map((key) => {
    const [method = '', route = ''] = key.split(' ');
    const body = key === 'POST /v1/registrations' ? REGISTRATION : key === 'POST /v1/tokens' ? { name: 'sneaky', role: 'admin' } : undefined;
    return { key, method: method as 'POST' | 'PUT' | 'DELETE', route, path: route.replace(':id', 'ext-1'), body };
  });

describe('admin API security on a real node', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  /** Every secret this test saw: none may appear in any log line. */
  const secrets = new Set<string>();
  /** Every log line and stderr line of every node run, and every CLI output. */
  const output: string[] = [];
  const cli = async (args: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof runCli> => {
    const result = await runCli([...args, '-f', project.file], { env: { BERTH_TOKEN: '', BERTH_ADMIN: '', ...env } });
    output.push(result.stderr);
    return result;
  };
  const collect = (n: BerthProcess): void => {
    output.push(...n.logs.map((l) => JSON.stringify(l)), ...n.stderr);
  };
  let viewer = '';
  let operator = '';

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    secrets.add(node.token);
    const create = async (name: string, role: string): Promise<string> => {
      const res = await node.call('POST', '/v1/tokens', { name, role });
      assert.equal(res.status, 201);
      const secret = String((res.body as { token: string }).token);
      secrets.add(secret);
      return secret;
    };
    viewer = await create('watcher', 'viewer');
    operator = await create('deployer', 'operator');
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('writes-a-bootstrap-admin-token-with-mode-0600-and-logs-where-not-what', async () => {
    assert.match(node.token, /^berth_[A-Za-z0-9_-]{43}$/);
    const file = join(node.dataDir, ADMIN_TOKEN_FILE);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const created = await node.waitForLog((l) => l.event === 'admin.token-created');
    assert.deepEqual([created.file, created.role, created.name], [file, 'admin', 'bootstrap']);
  });

  it('refuses-every-mutating-call-without-a-token-with-401-and-audits-it', async () => {
    for (const call of MUTATING) {
      const res = await node.call(call.method, call.path, call.body, null);
      assert.equal(res.status, 401, call.key);
      assert.equal((res.body as { code: string }).code, 'BERTH_ERR_UNAUTHORIZED', call.key);
      assert.match(String(res.headers['www-authenticate']), /^Bearer /, call.key);
      const audited = await node.waitForLog((l) => l.event === 'admin.audit' && l.requestId === res.headers['x-request-id']);
      assert.deepEqual([audited.actor, audited.method, audited.route, audited.status], ['anonymous', call.method, call.route, 401], call.key);
    }
  });

  it('refuses-every-mutating-call-of-a-viewer-with-403-and-audits-it', async () => {
    for (const call of MUTATING) {
      const res = await node.call(call.method, call.path, call.body, viewer);
      assert.equal(res.status, 403, call.key);
      assert.equal((res.body as { code: string }).code, 'BERTH_ERR_FORBIDDEN', call.key);
      const audited = await node.waitForLog((l) => l.event === 'admin.audit' && l.requestId === res.headers['x-request-id']);
      assert.deepEqual([audited.actor, audited.role, audited.route, audited.status], ['watcher', 'viewer', call.route, 403], call.key);
    }
    // The viewer still reads.
    const services = await node.call('GET', '/v1/services', undefined, viewer);
    assert.equal(services.status, 200);
    // The audit file holds the same refusals, read back by an admin.
    const tail = await node.call('GET', `/v1/audit?limit=${MUTATING.length}`);
    const entries = tail.body as AuditEntry[];
    assert.deepEqual(entries.map((e) => [e.actor, e.method, e.route, e.status]), MUTATING.map((c) => ['watcher', c.method, c.route, 403]));
    assert.equal((await node.call('GET', '/v1/audit', undefined, operator)).status, 403, 'only an admin reads the audit log');
  });

  it('lets-an-operator-reload-through-the-cli-but-not-a-viewer', async () => {
    const refused = await cli(['reload', '--json'], { BERTH_TOKEN: viewer });
    assert.equal(refused.code, 6, refused.stderr);
    assert.match(refused.stderr, /needs the role operator or higher; token "watcher" is viewer/);
    const reloaded = await cli(['reload', '--json', '--token', operator], { BERTH_TOKEN: viewer });
    assert.equal(reloaded.code, 0, reloaded.stderr);
    assert.equal((JSON.parse(reloaded.stdout) as { reloaded: boolean }).reloaded, true);
    const audited = await node.waitForLog((l) => l.event === 'admin.audit' && l.route === '/v1/reload' && l.status === 200);
    assert.equal(audited.actor, 'deployer');
  });

  it('lets-the-cli-on-the-nodes-machine-use-the-bootstrap-token-with-no-flag', async () => {
    const status = await cli(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.ok((JSON.parse(status.stdout) as unknown[]).length >= 1);
    // Given another node's address, the local token stays home.
    const elsewhere = await cli(['status', '--admin', node.admin.replace('127.0.0.1', 'localhost')]);
    assert.equal(elsewhere.code, 6, elsewhere.stderr);
    assert.match(elsewhere.stderr, /pass --token or set BERTH_TOKEN/);
  });

  it('creates-lists-and-revokes-tokens-through-the-cli-and-refuses-a-revoked-one', async () => {
    const created = await cli(['token', 'create', '--name', 'ci', '--role', 'operator']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    secrets.add(secret);
    assert.match(secret, /^berth_[A-Za-z0-9_-]{43}$/, 'the secret alone on stdout');
    assert.match(created.stderr, /created token "ci" \(operator\), id tok_[0-9a-f]{12}/);

    const listed = await cli(['token', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const tokens = JSON.parse(listed.stdout) as TokenInfo[];
    const ci = tokens.find((t) => t.name === 'ci');
    assert.ok(ci);
    assert.deepEqual(tokens.map((t) => t.name), ['bootstrap', 'watcher', 'deployer', 'ci']);
    assert.ok(!listed.stdout.includes('berth_'), 'no secret in the list');
    const table = await cli(['token', 'list']);
    assert.match(table.stdout.split('\n')[0] ?? '', /^ID\s+NAME\s+ROLE\s+CREATED\s+LAST USED$/);
    assert.match(table.stdout, new RegExp(`${ci.id}\\s+ci\\s+operator\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d`));

    assert.equal((await cli(['plan', '--token', secret])).code, 0);
    assert.equal((await cli(['token', 'list', '--token', secret])).code, 6, 'an operator does not manage tokens');
    const revoked = await cli(['token', 'revoke', ci.id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stdout, `revoked ${ci.id}\n`);
    const refused = await cli(['plan', '--token', secret]);
    assert.equal(refused.code, 6);
    assert.match(refused.stderr, /the node refused the token from --token: the bearer token is not one this node knows/);
    assert.equal((await cli(['token', 'revoke', ci.id])).code, 5, 'an unknown id is not found');
  });

  it('keeps-its-tokens-across-a-restart-without-a-new-bootstrap-token', async () => {
    const first = node.token;
    collect(node);
    await node.stop();
    node = await BerthProcess.start(project.file);
    assert.equal(node.token, first, 'the token file is the same');
    assert.equal((await node.call('GET', '/v1/node')).status, 200);
    assert.equal((await node.call('GET', '/v1/node', undefined, viewer)).status, 200);
    assert.equal(node.logs.some((l) => l.event === 'admin.token-created'), false);
    const audit = (await readFile(join(node.dataDir, AUDIT_FILE), 'utf8')).trim().split('\n');
    assert.ok(audit.length >= 2 * MUTATING.length + 2, 'the audit log of the previous run is kept');
  });

  it('never-writes-a-secret-to-any-log-or-the-audit-file', async () => {
    collect(node);
    output.push(await readFile(join(node.dataDir, AUDIT_FILE), 'utf8'));
    assert.ok(secrets.size >= 4);
    const text = output.join('\n');
    assert.ok(text.length > 1000, 'there was output to search');
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a secret in the output');
  });
});
