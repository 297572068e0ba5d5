import { Transform, type TransformCallback } from 'node:stream';

/** A request body went past the route's `maxBody` while it streamed. */
export class BodyTooLarge extends Error {
  override name = 'BodyTooLarge';
  constructor(readonly limit: number) {
    super(`the request body is larger than the ${limit} bytes allowed here`);
  }
}

/**
 * Passes a chunked request body through, counting; at the limit it fails the
 * stream, which fails the try that reads it. (A body with a Content-Length is
 * judged before it is read, and never goes through here.)
 */
export class BodyLimit extends Transform {
  readonly #limit: number;
  #bytes = 0;

  constructor(limit: number) {
    super();
    this.#limit = limit;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#limit) callback(new BodyTooLarge(this.#limit));
    else callback(null, chunk);
  }
}
