import { isBerthError } from '../../errors.js';
import { formatManifestError, loadManifest } from '../../manifest/load.js';
import { versionsOf } from '../../manifest/types.js';
import { ExitCode } from '../exit-codes.js';

const count = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * `berth validate`: checks a manifest and prints a one-line summary, or every
 * problem with file:line:col. Exit code OK when valid, MANIFEST_INVALID when
 * the file is missing, not YAML, or breaks the schema.
 */
export async function validate(file: string, options: { json: boolean }, out: NodeJS.WritableStream): Promise<ExitCode> {
  try {
    const spec = await loadManifest(file);
    const versions = versionsOf(spec);
    const summary = {
      groups: spec.groups.length,
      services: spec.groups.reduce((n, g) => n + g.services.length, 0),
      versions: versions.length,
      instances: versions.reduce((n, v) => n + v.replicas, 0),
    };
    out.write(
      options.json
        ? `${JSON.stringify({ valid: true, file: spec.file, ...summary })}\n`
        : `${file}: valid — ${count(summary.groups, 'group')}, ${count(summary.services, 'service')}, ${count(summary.versions, 'version')}, ${count(summary.instances, 'instance')}\n`,
    );
    return ExitCode.OK;
  } catch (err) {
    if (!isBerthError(err)) throw err;
    if (options.json) {
      const errors = err.details.length > 0 ? err.details : [{ where: file, message: err.message }];
      out.write(`${JSON.stringify({ valid: false, code: err.code, message: err.message, errors })}\n`);
    } else {
      out.write(`${formatManifestError(err)}\n`);
    }
    return ExitCode.MANIFEST_INVALID;
  }
}
