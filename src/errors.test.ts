import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { BerthError, ErrorCodes } from './errors.js';

describe('error codes', () => {
  it('docs/errors.md lists exactly the codes Berth can raise', async () => {
    const doc = await readFile(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const documented = new Set([...doc.matchAll(/^\|\s*`(BERTH_ERR_[A-Z_]+)`/gm)].map((m) => m[1]));
    assert.deepEqual([...documented].sort(), Object.keys(ErrorCodes).sort());
  });

  it('carries its code, status and retryability, and serialises without a stack', () => {
    const err = new BerthError('BERTH_ERR_MANIFEST_INVALID', 'berth.yaml: 1 problem', { details: [{ where: 'berth.yaml:3:5 groups', message: 'expected a map' }] });
    assert.equal(err.status, 400);
    assert.equal(err.retryable, false);
    const json = JSON.parse(JSON.stringify(err)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json).sort(), ['code', 'details', 'message']);
  });
});
