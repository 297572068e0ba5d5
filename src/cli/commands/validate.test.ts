import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../exit-codes.js';
import { validate } from './validate.js';

async function run(file: string, json: boolean): Promise<{ code: ExitCode; out: string }> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const code = await validate(file, { json }, out);
  out.end();
  return { code, out: Buffer.concat(chunks).toString('utf8') };
}

describe('berth validate', () => {
  let dir: string;
  let good: string;
  let bad: string;
  let broken: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-validate-'));
    good = join(dir, 'good.yaml');
    bad = join(dir, 'bad.yaml');
    broken = join(dir, 'broken.yaml');
    await writeFile(
      good,
      'groups:\n  payments:\n    services:\n      charges:\n        command: node c.js\n        replicas: 3\n        versions: { "1.0.0": {}, "2.0.0": { replicas: 1 } }\n  users:\n    services:\n      profiles: { command: node p.js, replicas: 2 }\n',
    );
    await writeFile(bad, 'groups:\n  payments:\n    services:\n      charges:\n        command: node c.js\n        replica: 3\n        restart: sometimes\n');
    await writeFile(broken, 'groups:\n  payments: [a\n');
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints-a-summary-of-a-valid-manifest-and-exits-ok', async () => {
    const { code, out } = await run(good, false);
    assert.equal(code, ExitCode.OK);
    assert.equal(out, `${good}: valid — 2 groups, 2 services, 3 versions, 6 instances\n`);
  });

  it('prints-the-summary-as-json', async () => {
    const { code, out } = await run(good, true);
    assert.equal(code, ExitCode.OK);
    assert.deepEqual(JSON.parse(out), { valid: true, file: good, groups: 2, services: 2, versions: 3, instances: 6 });
  });

  it('prints-every-problem-with-its-line-and-exits-manifest-invalid', async () => {
    const { code, out } = await run(bad, false);
    assert.equal(code, ExitCode.MANIFEST_INVALID);
    const lines = out.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /bad\.yaml: 2 problems$/);
    assert.match(lines[1] ?? '', /bad\.yaml:6:9 {2}groups\.payments\.services\.charges\.replica: unknown key "replica" \(did you mean "replicas"\?\)$/);
    assert.match(lines[2] ?? '', /bad\.yaml:7:9 {2}groups\.payments\.services\.charges\.restart: expected one of always \| on-failure \| never, got "sometimes"$/);
  });

  it('prints-problems-as-json-with-the-code', async () => {
    const { code, out } = await run(bad, true);
    assert.equal(code, ExitCode.MANIFEST_INVALID);
    const report = JSON.parse(out) as { valid: boolean; code: string; errors: { where: string; message: string }[] };
    assert.equal(report.valid, false);
    assert.equal(report.code, 'BERTH_ERR_MANIFEST_INVALID');
    assert.deepEqual(report.errors.map((e) => e.where), [`${bad}:6:9 groups.payments.services.charges.replica`, `${bad}:7:9 groups.payments.services.charges.restart`]);
  });

  it('reports-yaml-syntax-errors-with-the-syntax-code', async () => {
    const { code, out } = await run(broken, true);
    assert.equal(code, ExitCode.MANIFEST_INVALID);
    const report = JSON.parse(out) as { code: string; errors: { where: string }[] };
    assert.equal(report.code, 'BERTH_ERR_MANIFEST_SYNTAX');
    assert.match(report.errors[0]?.where ?? '', /broken\.yaml:\d+:\d+$/);
  });

  it('names-a-missing-file-and-exits-manifest-invalid', async () => {
    const missing = join(dir, 'missing.yaml');
    const human = await run(missing, false);
    assert.equal(human.code, ExitCode.MANIFEST_INVALID);
    assert.match(human.out, /missing\.yaml: cannot read the manifest: no such file/);
    const json = await run(missing, true);
    assert.equal(json.code, ExitCode.MANIFEST_INVALID);
    assert.deepEqual(JSON.parse(json.out), {
      valid: false,
      code: 'BERTH_ERR_MANIFEST_NOT_FOUND',
      message: `${missing}: cannot read the manifest: no such file`,
      errors: [{ where: missing, message: `${missing}: cannot read the manifest: no such file` }],
    });
  });
});
