#!/usr/bin/env node
// Runs every compiled test file with node's test runner (Node 20 does not
// expand globs itself). Unit tests first, then the cross-module, e2e and chaos
// suites. One bound on the whole run so a hung test cannot hold CI forever.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dist = join(root, 'dist');
const filter = process.argv.slice(2);

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return find(path);
    return path.endsWith('.test.js') ? [path] : [];
  });
}

const rank = (f) => (f.includes('/test/chaos/') ? 3 : f.includes('/test/e2e/') ? 2 : f.includes('/test/') ? 1 : 0);
const files = find(dist)
  .filter((f) => filter.length === 0 || filter.some((p) => relative(root, f).includes(p)))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
if (files.length === 0) {
  console.error('no test files found under dist/: run `npm run build` first');
  process.exit(1);
}

const child = spawn(process.execPath, ['--test', '--test-reporter=spec', '--test-timeout=180000', ...files], { stdio: 'inherit' });
const bound = setTimeout(() => {
  console.error('test run exceeded 18 minutes: stopping it');
  child.kill('SIGKILL');
}, 18 * 60_000);
child.on('exit', (code, signal) => {
  clearTimeout(bound);
  process.exitCode = code ?? (signal ? 1 : 0);
});
