// storage/files: a small tree of named text documents with metadata, listed
// by folder. Where blobs keeps opaque bytes, files keeps JSON documents
// {content, contentType?} under paths like `docs/terms.md`, with an ETag
// so a client can skip a download it already has (If-None-Match → 304).
import { createHash } from 'node:crypto';
import { HttpError, json, readJson, serve } from './lib/http.mjs';

const MAX_FILE = Number(process.env.FILES_MAX_BYTES ?? 256 * 1024);
const PATH = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

/** @type {Map<string, { path: string, content: string, contentType: string, size: number, etag: string, updatedAt: string }>} */
const files = new Map();

function checkPath(path) {
  if (!PATH.test(path) || path.split('/').some((p) => p === '.' || p === '..')) {
    throw new HttpError(400, 'bad_request', 'a file path is segments of letters, digits, ".", "_" or "-" joined by "/"');
  }
}

function describe(file) {
  const { content: _content, ...rest } = file;
  return rest;
}

serve({
  name: 'files',
  version: '1.0.0',
  routes: [
    [
      'GET',
      '/files',
      ({ res, query }) => {
        // `?prefix=docs/` lists one folder: its files, and its sub-folders once each.
        const prefix = query.get('prefix') ?? '';
        const entries = [];
        const folders = new Set();
        for (const file of files.values()) {
          if (!file.path.startsWith(prefix)) continue;
          const rest = file.path.slice(prefix.length);
          const slash = rest.indexOf('/');
          if (slash === -1) entries.push(describe(file));
          else folders.add(prefix + rest.slice(0, slash + 1));
        }
        entries.sort((a, b) => a.path.localeCompare(b.path));
        json(res, 200, { prefix, folders: [...folders].sort(), files: entries });
      },
    ],
    [
      'GET',
      '/files/*path',
      ({ req, res, params }) => {
        checkPath(params.path);
        const file = files.get(params.path);
        if (!file) throw new HttpError(404, 'not_found', `no file ${params.path}`);
        if (req.headers['if-none-match'] === file.etag) {
          res.writeHead(304, { etag: file.etag }).end();
          return;
        }
        json(res, 200, file, { etag: file.etag });
      },
    ],
    [
      'PUT',
      '/files/*path',
      async ({ req, res, params }) => {
        checkPath(params.path);
        const body = await readJson(req, MAX_FILE + 1024);
        if (typeof body?.content !== 'string') {
          throw new HttpError(400, 'bad_request', 'expected {"content": "<text>", "contentType"?: "text/markdown"}');
        }
        const size = Buffer.byteLength(body.content);
        if (size > MAX_FILE) throw new HttpError(413, 'too_large', `file content larger than ${MAX_FILE} bytes`);
        const existed = files.has(params.path);
        const file = {
          path: params.path,
          content: body.content,
          contentType: typeof body.contentType === 'string' ? body.contentType : 'text/plain',
          size,
          etag: `"${createHash('sha1').update(body.content).digest('base64url')}"`,
          updatedAt: new Date().toISOString(),
        };
        files.set(params.path, file);
        json(res, existed ? 200 : 201, describe(file), { etag: file.etag });
      },
    ],
    [
      'DELETE',
      '/files/*path',
      ({ res, params }) => {
        checkPath(params.path);
        if (!files.delete(params.path)) throw new HttpError(404, 'not_found', `no file ${params.path}`);
        json(res, 200, { deleted: params.path });
      },
    ],
  ],
});
