import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { splitLines } from './line-splitter.js';

async function collect(chunks: (string | Buffer)[], maxLength?: number): Promise<string[]> {
  const stream = new PassThrough();
  const lines: string[] = [];
  splitLines(stream, (l) => lines.push(l), maxLength);
  for (const c of chunks) stream.write(c);
  stream.end();
  await once(stream, 'end');
  return lines;
}

describe('splitLines', () => {
  it('joins lines split across chunks and strips CR', async () => {
    assert.deepEqual(await collect(['he', 'llo\r\nwor', 'ld\n', 'tail']), ['hello', 'world', 'tail']);
  });

  it('keeps multi-byte characters split across chunks intact', async () => {
    const euro = Buffer.from('€\n');
    assert.deepEqual(await collect([euro.subarray(0, 1), euro.subarray(1)]), ['€']);
  });

  it('cuts a line longer than the maximum instead of buffering it', async () => {
    assert.deepEqual(await collect(['abcdefgh', 'ij\n'], 4), ['abcd', 'efgh', 'ij']);
  });

  it('keeps empty lines', async () => {
    assert.deepEqual(await collect(['a\n\nb\n']), ['a', '', 'b']);
  });
});
