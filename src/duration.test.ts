import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatDuration, parseDuration } from './duration.js';

describe('durations', () => {
  it('parses the forms people write', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('1s'), 1000);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('2h'), 7_200_000);
    assert.equal(parseDuration('250'), 250);
    assert.equal(parseDuration(100), 100);
  });

  it('rejects what is not a duration', () => {
    for (const bad of ['fast', '', '1x', 's', '1s fast', '-1s', -5]) assert.equal(parseDuration(bad), undefined, String(bad));
  });

  it('formats uptimes compactly', () => {
    assert.equal(formatDuration(450), '450ms');
    assert.equal(formatDuration(59_000), '59s');
    assert.equal(formatDuration(192_000), '3m12s');
    assert.equal(formatDuration(3_600_000), '1h');
    assert.equal(formatDuration(3 * 86_400_000), '3d');
  });
});
