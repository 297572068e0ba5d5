import { isBerthError } from '../../errors.js';
import { formatPlan, type Plan } from '../../manifest/diff.js';
import { formatManifestError } from '../../manifest/load.js';
import type { ReloadOutcome } from '../../node.js';
import { ExitCode } from '../exit-codes.js';
import { connect } from '../node-address.js';

export interface ReloadOptions {
  file: string;
  admin?: string;
  token?: string;
  json?: boolean;
}

/**
 * How long the CLI waits for the node to answer a reload. A rollout replaces
 * one instance at a time and waits up to its bound for each (docs/reload.md),
 * so a reload of many replicas can take minutes.
 */
const RELOAD_TIMEOUT_MS = 15 * 60_000;
/** A dot on stderr this often while the node works, so a long rollout does not look hung. */
const DOT_EVERY_MS = 1000;

/**
 * `berth reload`: the node re-reads its manifest file and applies it without
 * a restart. Prints the plan applied and what the supervisor did. Exit OK;
 * MANIFEST_INVALID with every problem when the manifest is invalid (nothing
 * changed); FAILURE when the reload was refused or a rollout failed.
 */
export async function reload(options: ReloadOptions, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options, { timeoutMs: RELOAD_TIMEOUT_MS });
  const progress = options.json ? undefined : dots(err, 'reloading');
  try {
    const { plan, result } = await client.post<ReloadOutcome>('/v1/reload');
    progress?.stop();
    if (options.json) {
      out.write(`${JSON.stringify({ reloaded: true, plan, result }, null, 2)}\n`);
    } else {
      out.write(`${formatPlan(plan)}\n`);
      out.write(`reloaded: ${result.started} started, ${result.stopped} stopped, ${result.replaced} replaced${result.failed.length > 0 ? `, ${result.failed.length} failed` : ''}\n`);
      for (const f of result.failed) err.write(`rollout of ${f.key} failed: ${f.reason}; its old instances keep running\n`);
    }
    return result.failed.length > 0 ? ExitCode.FAILURE : ExitCode.OK;
  } catch (e) {
    progress?.stop();
    const code = reportReloadError(e, options.json ?? false, out, err);
    if (code === undefined) throw e;
    return code;
  } finally {
    progress?.stop();
    await client.close();
  }
}

/**
 * Prints an invalid manifest (every problem with file:line) or a refused
 * reload, and returns its exit code; undefined for any other error (the
 * caller rethrows it: an unreachable node is exit 4 in main).
 */
export function reportReloadError(e: unknown, json: boolean, out: NodeJS.WritableStream, err: NodeJS.WritableStream): ExitCode | undefined {
  if (!isBerthError(e)) return undefined;
  const manifest = e.code === 'BERTH_ERR_MANIFEST_INVALID' || e.code === 'BERTH_ERR_MANIFEST_SYNTAX' || e.code === 'BERTH_ERR_MANIFEST_NOT_FOUND';
  if (!manifest && e.code !== 'BERTH_ERR_RELOAD_REFUSED') return undefined;
  if (json) {
    out.write(`${JSON.stringify({ reloaded: false, code: e.code, message: e.message, errors: e.details }, null, 2)}\n`);
  } else if (manifest) {
    err.write(`${formatManifestError(e)}\nnothing changed: the node keeps running its current manifest\n`);
  } else {
    err.write(`${e.message}\n${e.details.map((d) => `  ${d.where === undefined ? '' : `${d.where}: `}${d.message}\n`).join('')}nothing changed\n`);
  }
  return manifest ? ExitCode.MANIFEST_INVALID : ExitCode.FAILURE;
}


/** Explains a plan that a reload would refuse. */
export function refusalNote(plan: Plan): string | undefined {
  if (plan.restartRequired.length === 0) return undefined;
  return `berth reload would refuse this: ${plan.restartRequired.map((r) => r.field).join(', ')} need a restart of the node`;
}

/** Writes `label` then a dot every second until stopped, then ends the line. */
function dots(stream: NodeJS.WritableStream, label: string): { stop(): void } {
  stream.write(label);
  const timer = setInterval(() => stream.write('.'), DOT_EVERY_MS);
  let stopped = false;
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      stream.write('\n');
    },
  };
}
