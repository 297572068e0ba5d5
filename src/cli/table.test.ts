import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { stripVTControlCharacters } from 'node:util';
import { colorStatus, renderTable, visibleWidth } from './table.js';

describe('renderTable', () => {
  it('aligns-columns-with-two-spaces-and-upper-case-headers', () => {
    const out = renderTable(
      [{ header: 'name' }, { header: 'count', align: 'right' }, { header: 'note' }],
      [
        ['alpha', '1', 'x'],
        ['b', '1234', ''],
      ],
    );
    assert.equal(out, ['NAME   COUNT  NOTE', 'alpha      1  x', 'b       1234'].join('\n'));
  });

  it('leaves-no-trailing-spaces', () => {
    const out = renderTable([{ header: 'a' }, { header: 'b' }], [['long value', ''], ['x', '']]);
    for (const line of out.split('\n')) assert.equal(line, line.trimEnd());
  });

  it('measures-width-without-ansi-escapes', () => {
    const green = colorStatus('passing', true);
    assert.notEqual(green, 'passing');
    assert.equal(visibleWidth(green), 7);
    const out = renderTable([{ header: 'status' }, { header: 'port', align: 'right' }], [[green, '80'], ['critical', '8080']]);
    const lines = out.split('\n').map((l) => stripVTControlCharacters(l));
    assert.deepEqual(lines, ['STATUS    PORT', 'passing     80', 'critical  8080']);
  });

  it('renders-headers-only-when-there-are-no-rows', () => {
    assert.equal(renderTable([{ header: 'a' }, { header: 'bb' }], []), 'A  BB');
  });
});

describe('colorStatus', () => {
  it('returns-plain-text-when-disabled', () => {
    assert.equal(colorStatus('critical', false), 'critical');
  });

  it('colours-by-status-family', () => {
    assert.equal(colorStatus('passing', true), '\u001b[32mpassing\u001b[0m');
    assert.equal(colorStatus('warning', true), '\u001b[33mwarning\u001b[0m');
    assert.equal(colorStatus('critical', true), '\u001b[31mcritical\u001b[0m');
    assert.equal(colorStatus('failed', true), '\u001b[31mfailed\u001b[0m');
    assert.equal(colorStatus('starting', true), '\u001b[36mstarting\u001b[0m');
    assert.equal(colorStatus('draining', true), '\u001b[36mdraining\u001b[0m');
    assert.equal(colorStatus('stopped', true), '\u001b[2mstopped\u001b[0m');
  });

  it('leaves-unknown-statuses-uncoloured', () => {
    assert.equal(colorStatus('weird', true), 'weird');
  });
});
