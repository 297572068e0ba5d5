// storage/blobs: PUT/GET /blobs/:key keeps raw bodies in memory. Bodies are
// read chunk by chunk against a per-blob cap (413 past it, before buffering
// the rest) and a total cap (507), and streamed back chunk by chunk.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HttpError, json, readChunks, serve } from './lib/http.mjs';

const MAX_BLOB = Number(process.env.BLOB_MAX_BYTES ?? 1024 * 1024);
const MAX_TOTAL = Number(process.env.BLOB_TOTAL_BYTES ?? 64 * 1024 * 1024);
const INSTANCE = process.env.BERTH_INSTANCE ?? '';

/** @type {Map<string, { chunks: Buffer[], size: number, contentType: string, updatedAt: string }>} */
const blobs = new Map();
let total = 0;

function meta(key, blob) {
  return { key, size: blob.size, contentType: blob.contentType, updatedAt: blob.updatedAt };
}

serve({
  name: 'blobs',
  version: '1.0.0',
  routes: [
    ['GET', '/blobs', ({ res }) => json(res, 200, { blobs: [...blobs].map(([k, b]) => meta(k, b)), totalBytes: total, maxBlobBytes: MAX_BLOB })],
    [
      'PUT',
      '/blobs/*key',
      async ({ req, res, params }) => {
        const { chunks, size } = await readChunks(req, MAX_BLOB);
        const previous = blobs.get(params.key);
        if (total - (previous?.size ?? 0) + size > MAX_TOTAL) {
          throw new HttpError(507, 'storage_full', `storing ${size} bytes would pass this instance's ${MAX_TOTAL}-byte total`);
        }
        const blob = {
          chunks,
          size,
          contentType: req.headers['content-type'] ?? 'application/octet-stream',
          updatedAt: new Date().toISOString(),
        };
        blobs.set(params.key, blob);
        total += size - (previous?.size ?? 0);
        json(res, previous ? 200 : 201, meta(params.key, blob));
      },
    ],
    [
      'GET',
      '/blobs/*key',
      async ({ res, params }) => {
        const blob = blobs.get(params.key);
        if (!blob) throw new HttpError(404, 'not_found', `no blob ${params.key}`);
        // The body is the blob itself, so who answered goes in headers.
        res.writeHead(200, {
          'content-type': blob.contentType,
          'content-length': blob.size,
          'last-modified': new Date(blob.updatedAt).toUTCString(),
          'x-berth-instance': INSTANCE,
          'x-berth-version': process.env.BERTH_VERSION ?? '1.0.0',
        });
        await pipeline(Readable.from(blob.chunks), res);
      },
    ],
    [
      'DELETE',
      '/blobs/*key',
      ({ res, params }) => {
        const blob = blobs.get(params.key);
        if (!blob) throw new HttpError(404, 'not_found', `no blob ${params.key}`);
        blobs.delete(params.key);
        total -= blob.size;
        json(res, 200, { deleted: params.key });
      },
    ],
  ],
});
