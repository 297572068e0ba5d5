import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommandCheck } from './command.js';
import { HttpCheck } from './http.js';
import { createCheck } from './index.js';
import { TcpCheck } from './tcp.js';

describe('createCheck', () => {
  it('builds-the-check-each-kind-names', () => {
    assert.ok(createCheck({ kind: 'http', path: '/health', method: 'GET', headers: {} }) instanceof HttpCheck);
    assert.ok(createCheck({ kind: 'tcp' }) instanceof TcpCheck);
    assert.ok(createCheck({ kind: 'command', command: 'true' }) instanceof CommandCheck);
  });

  it('has-no-check-for-none', () => {
    assert.equal(createCheck({ kind: 'none' }), undefined);
  });
});
