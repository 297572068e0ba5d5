import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareSemver, isPrerelease, isSemver } from './semver.js';

describe('semver', () => {
  it('accepts-release-and-prerelease-versions-only', () => {
    for (const v of ['0.0.0', '1.2.3', '10.20.30', '1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-0.3.7', '1.0.0-x-y.7']) assert.ok(isSemver(v), v);
    for (const v of ['1.0', '1', 'v1.0.0', '01.0.0', '1.0.0+build', '1.0.0-', '1.0.0-01', ' 1.0.0', 1]) assert.ok(!isSemver(v), String(v));
  });

  it('tells-prereleases-from-releases', () => {
    assert.ok(isPrerelease('1.2.3-rc.1'));
    assert.ok(!isPrerelease('1.2.3'));
  });

  it('orders-by-precedence-as-semver-org-defines-it', () => {
    const ordered = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.2.0', '1.10.0', '2.0.0'];
    const shuffled = [...ordered].reverse();
    assert.deepEqual(shuffled.sort(compareSemver), ordered);
    assert.equal(compareSemver('1.0.0', '1.0.0'), 0);
  });
});
