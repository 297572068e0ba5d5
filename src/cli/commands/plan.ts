import type { Plan } from '../../manifest/diff.js';
import { ExitCode } from '../exit-codes.js';
import { refusalNote, reportReloadError } from './reload.js';
import { connect } from '../node-address.js';

export interface PlanOptions {
  file: string;
  admin?: string;
  token?: string;
  json?: boolean;
}

/**
 * `berth plan`: what `berth reload` would change, as the node sees it (its
 * manifest file against the configuration it runs). Applies nothing. Exit OK,
 * or MANIFEST_INVALID with every problem when the manifest is invalid.
 */
export async function plan(options: PlanOptions, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const { changes, text } = await client.get<{ changes: Plan; text: string }>('/v1/plan');
    if (options.json) {
      out.write(`${JSON.stringify(changes, null, 2)}\n`);
    } else {
      out.write(`${text}\n`);
      const note = refusalNote(changes);
      if (note !== undefined) err.write(`${note}\n`);
    }
    return ExitCode.OK;
  } catch (e) {
    const code = reportReloadError(e, options.json ?? false, out, err);
    if (code === undefined) throw e;
    return code;
  } finally {
    await client.close();
  }
}
