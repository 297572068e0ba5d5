import { resolve } from 'node:path';
import type { InstanceRecord } from '../../catalog/types.js';
import { loadManifest } from '../../manifest/load.js';
import { readNodeFile } from '../../node.js';
import { AdminClient } from '../admin-client.js';
import { ExitCode } from '../exit-codes.js';
import { renderStatus } from '../render.js';

export interface StatusOptions {
  file: string;
  admin?: string;
  all?: boolean;
  json?: boolean;
}

/** `berth status` / `berth ps`: the running node's instances as a table or JSON. */
export async function status(options: StatusOptions, out: NodeJS.WritableStream): Promise<ExitCode> {
  const client = new AdminClient(await adminUrl(options));
  try {
    const records = await client.get<InstanceRecord[]>('/v1/instances');
    const shown = options.all ? records : records.filter((r) => r.status !== 'stopped');
    if (options.json) out.write(`${JSON.stringify(shown, null, 2)}\n`);
    else out.write(`${renderStatus(records, { now: Date.now(), color: (out as { isTTY?: boolean }).isTTY === true, all: options.all ?? false })}\n`);
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/**
 * Where the node's admin API is: --admin, else $BERTH_ADMIN, else the node file
 * in the manifest's data dir (right even when the manifest says port 0), else
 * the manifest's admin.listen, else the default address.
 */
export async function adminUrl(options: { file: string; admin?: string }): Promise<string> {
  if (options.admin) return options.admin;
  if (process.env.BERTH_ADMIN) return process.env.BERTH_ADMIN;
  try {
    const spec = await loadManifest(resolve(options.file));
    const running = await readNodeFile(spec.dataDir);
    if (running) return running.admin;
    const { host, port } = spec.admin.listen;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  } catch {
    return 'http://127.0.0.1:8081';
  }
}
