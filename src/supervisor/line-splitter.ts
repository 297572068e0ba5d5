import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

/** Longest line kept whole; a longer one is cut so a runaway writer cannot grow Berth's memory. */
export const MAX_LINE_BYTES = 16 * 1024;

/**
 * Calls `onLine` for every line the stream emits (without the newline). A
 * line over `maxLength` characters is emitted in pieces; the unterminated tail
 * is emitted when the stream ends.
 */
export function splitLines(stream: Readable, onLine: (line: string) => void, maxLength = MAX_LINE_BYTES): void {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  stream.on('data', (chunk: Buffer) => {
    pending += decoder.write(chunk);
    let nl: number;
    while ((nl = pending.indexOf('\n')) !== -1) {
      emit(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
    while (pending.length > maxLength) {
      onLine(pending.slice(0, maxLength));
      pending = pending.slice(maxLength);
    }
  });
  stream.on('end', () => {
    pending += decoder.end();
    if (pending.length > 0) emit(pending);
    pending = '';
  });

  function emit(line: string): void {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    for (let i = 0; i < text.length || i === 0; i += maxLength) onLine(text.slice(i, i + maxLength));
  }
}
