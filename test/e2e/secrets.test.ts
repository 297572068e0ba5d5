import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { BerthProcess, makeProject, testManifest, type LogLine } from '../support/node-process.js';

/** Letters and digits only, so a match in a JSON line is a match in the raw text. */
const secret = (what: string): string => `${what}${randomBytes(12).toString('hex')}`;

const S = {
  bearer: secret('bearer'),
  cookie: secret('cookie'),
  apiKey: secret('apikey'),
  query: secret('query'),
  printed: secret('printed'),
  urlPassword: secret('urlpassword'),
  manifestField: secret('ssn'),
  commandLine: secret('cmdline'),
  healthHeader: secret('health'),
  env: secret('env'),
};

const MANIFEST = testManifest(`log: { level: info, redact: [ssn] }
groups:
  core:
    services:
      web:
        command: node web.mjs --api-key=${S.commandLine}
        env: { LOG_REQUESTS: 1, DB_PASSWORD: ${S.env} }
        health: { http: /health, interval: 200ms, timeout: 150ms, headers: { Authorization: "Bearer ${S.healthHeader}" } }
`);

describe('secrets in the logs', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gw: string;

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    await node.waitForInstances((xs) => xs.some((r) => r.status === 'passing'));
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  const output = (pred: (msg: string) => boolean) => (l: LogLine) => l.event === 'instance.output' && typeof l.msg === 'string' && pred(l.msg);

  it('carries-secrets-through-the-gateway-to-the-instance', async () => {
    const res = await request(`${gw}/core/web/echo?token=${S.query}`, {
      headers: { authorization: `Bearer ${S.bearer}`, cookie: `session=${S.cookie}`, 'x-api-key': S.apiKey },
    });
    const echo = (await res.body.json()) as { url: string; headers: Record<string, string> };
    assert.equal(res.statusCode, 200);
    // The instance got them all: the log, not the request, is where they must stop.
    assert.equal(echo.url, `/echo?token=${S.query}`);
    assert.equal(echo.headers.authorization, `Bearer ${S.bearer}`);
    assert.equal(echo.headers.cookie, `session=${S.cookie}`);

    const access = await node.waitForLog((l) => l.event === 'access' && String(l.path).endsWith('/echo'));
    assert.equal(access.level, 'info');
    assert.equal(access.status, 200);
    await node.waitForLog(output((m) => m === 'received GET /echo?token=[redacted]'));
  });

  it('masks-secrets-an-instance-prints-on-stdout-and-stderr', async () => {
    const print = async (line: string, stream = 'stdout'): Promise<void> => {
      const res = await request(`${gw}/core/web/control/print?stream=${stream}`, { method: 'POST', body: line });
      assert.equal(await res.body.text(), 'ok');
    };
    await print(`Authorization: Bearer ${S.printed}`);
    await print(`connecting to postgres://app:${S.urlPassword}@db:5432/shop`);
    await print(`{"customer":"c-42","ssn":"${S.manifestField}"}`, 'stderr');

    await node.waitForLog(output((m) => m === 'Authorization: [redacted]'));
    await node.waitForLog(output((m) => m === 'connecting to postgres://app:[redacted]@db:5432/shop'));
    const stderr = await node.waitForLog(output((m) => m === '{"customer":"c-42","ssn":"[redacted]"}'));
    assert.equal(stderr.stream, 'stderr');
  });

  it('masks-a-secret-on-the-command-line-of-the-started-line', async () => {
    const started = await node.waitForLog((l) => l.event === 'instance.started');
    assert.equal(started.command, 'node web.mjs --api-key=[redacted]');
  });

  it('finds-none-of-the-secrets-in-any-line-the-node-wrote', async () => {
    await node.stop();
    await node.assertNeverLogged(...Object.values(S));
    // The check can fail: what was logged is found.
    await assert.rejects(node.assertNeverLogged('[redacted]'), /appeared in the node's output/);
    assert.ok(node.logs.length > 10);
  });
});
