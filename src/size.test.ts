import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSize, parseSize } from './size.js';

describe('sizes', () => {
  it('reads bytes, decimal and binary units, case-insensitively', () => {
    assert.equal(parseSize(512), 512);
    assert.equal(parseSize('512'), 512);
    assert.equal(parseSize('16KiB'), 16_384);
    assert.equal(parseSize('10mib'), 10 * 1024 * 1024);
    assert.equal(parseSize('1.5 KiB'), 1536);
    assert.equal(parseSize('2MB'), 2_000_000);
    assert.equal(parseSize('1g'), 1024 ** 3);
  });

  it('refuses what is not a size', () => {
    for (const bad of ['', 'ten', '10 parsecs', '-1', '1e3', Number.NaN, -5, 1.5]) assert.equal(parseSize(bad), undefined, String(bad));
  });

  it('formats the exact binary form', () => {
    assert.equal(formatSize(10 * 1024 * 1024), '10MiB');
    assert.equal(formatSize(1536), '1.5KiB');
    assert.equal(formatSize(1000), '1000B');
  });
});
