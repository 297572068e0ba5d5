import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';
import { loadManifest } from '../manifest/load.js';
import { readNodeFile } from '../node.js';

const DEFAULT_ADMIN = 'http://127.0.0.1:8081';

/**
 * Where the node's admin API is: --admin, else $BERTH_ADMIN, else the node
 * file in the manifest's data dir (right even when the manifest says port 0,
 * and found even when the manifest is broken: only its `dataDir` is read, so a
 * reload of a broken file still reaches the node, which answers with every
 * problem), else the manifest's admin.listen, else the default address.
 */
export async function adminUrl(options: { file: string; admin?: string }): Promise<string> {
  if (options.admin) return options.admin;
  if (process.env.BERTH_ADMIN) return process.env.BERTH_ADMIN;
  const file = resolve(options.file);
  let dataDir = '.berth';
  try {
    const raw = parse(await readFile(file, 'utf8'), { logLevel: 'silent' }) as { dataDir?: unknown } | null;
    if (raw !== null && typeof raw === 'object' && typeof raw.dataDir === 'string') dataDir = raw.dataDir;
  } catch {
    // Not YAML, or no file: the default data dir.
  }
  const running = await readNodeFile(resolve(dirname(file), dataDir));
  if (running) return running.admin;
  try {
    const { host, port } = (await loadManifest(file)).admin.listen;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  } catch {
    return DEFAULT_ADMIN;
  }
}
