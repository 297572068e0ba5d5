import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { makeProject, runCli } from '../support/node-process.js';

describe('berth CLI', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups) await c();
  });

  it('validate reports five different mistakes with file:line each and exits 3', async () => {
    const project = await makeProject(`admin: { listen: "127.0.0.1:0" }
groups:
  core:
    services:
      web:
        command: node web.mjs
        replica: 2
        restart: sometimes
        stable: "3.0.0"
        versions:
          "1.0.0": { replicas: -1 }
        health: { http: /health, interval: fast }
`);
    cleanups.push(() => project.cleanup());
    const { code, stdout, stderr } = await runCli(['validate', project.file]);
    assert.equal(code, 3, stderr);
    const lines = (stdout + stderr).split('\n').filter((l) => /berth\.yaml:\d+:\d+/.test(l));
    assert.equal(lines.length, 5, stdout + stderr);
    const expected: [number, RegExp][] = [
      [7, /replica/],
      [8, /sometimes/],
      [9, /3\.0\.0/],
      [11, /replicas/],
      [12, /interval/],
    ];
    for (const [line, what] of expected) {
      assert.ok(lines.some((l) => l.includes(`berth.yaml:${line}:`) && what.test(l)), `an error on line ${line} matching ${what}:\n${lines.join('\n')}`);
    }
  });

  it('validate accepts the example manifest', async () => {
    const { code, stdout } = await runCli(['validate', 'examples/shop/berth.yaml']);
    assert.equal(code, 0);
    assert.match(stdout, /valid/);
  });

  it('up refuses an invalid manifest with exit 3 and starts nothing', async () => {
    const project = await makeProject('groups: {}\nbogus: 1\n');
    cleanups.push(() => project.cleanup());
    const { code, stderr } = await runCli(['up', '-f', project.file]);
    assert.equal(code, 3);
    assert.match(stderr, /berth\.yaml:2:1/);
  });

  it('status says clearly that no node is running, with exit 4', async () => {
    const { code, stderr } = await runCli(['status', '--admin', 'http://127.0.0.1:1']);
    assert.equal(code, 4);
    assert.match(stderr, /no Berth node is answering at http:\/\/127\.0\.0\.1:1/);
  });

  it('an unknown command is a usage error (exit 2)', async () => {
    const { code, stderr } = await runCli(['frobnicate']);
    assert.equal(code, 2);
    assert.match(stderr, /unknown command/);
  });
});
