import type { InstanceView } from '../../admin/api.js';
import { connect } from '../node-address.js';
import { ExitCode } from '../exit-codes.js';
import { renderStatus } from '../render.js';

export interface StatusOptions {
  file: string;
  admin?: string;
  token?: string;
  all?: boolean;
  json?: boolean;
}

/** `berth status` / `berth ps`: the running node's instances, with their usage and limits, as a table or JSON. */
export async function status(options: StatusOptions, out: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const records = await client.get<InstanceView[]>('/v1/instances');
    const shown = options.all ? records : records.filter((r) => r.status !== 'stopped');
    if (options.json) out.write(`${JSON.stringify(shown, null, 2)}\n`);
    else out.write(`${renderStatus(records, { now: Date.now(), color: (out as { isTTY?: boolean }).isTTY === true, all: options.all ?? false })}\n`);
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}
