import { once } from 'node:events';
import { resolve } from 'node:path';
import { isBerthError } from '../../errors.js';
import { formatManifestError, loadManifest } from '../../manifest/load.js';
import type { NodeSpec } from '../../manifest/types.js';
import { BerthNode } from '../../node.js';
import { createLogger } from '../../telemetry/logger.js';
import { ExitCode } from '../exit-codes.js';

export interface UpOptions {
  file: string;
  logFormat?: 'json' | 'pretty';
  logLevel?: string;
}

/** `berth up`: runs a node in the foreground until SIGINT or SIGTERM; SIGHUP reloads its manifest. */
export async function up(options: UpOptions): Promise<ExitCode> {
  let spec: NodeSpec;
  try {
    spec = await loadManifest(resolve(options.file));
  } catch (err) {
    if (!isBerthError(err)) throw err;
    process.stderr.write(`${formatManifestError(err)}\n`);
    return ExitCode.MANIFEST_INVALID;
  }

  const logger = createLogger({
    format: options.logFormat ?? (process.stdout.isTTY ? 'pretty' : 'json'),
    level: options.logLevel ?? spec.logLevel,
    redact: spec.logRedact,
  });
  const node = new BerthNode(spec, { logger });

  // Listen before starting, so a signal during start-up still stops what was started.
  const stopSignal = waitForStopSignal();
  // SIGHUP reloads, as for nginx. Handled from the start: its default action would kill the node.
  // The node logs every outcome (node.reloaded / node.reload-failed); a bad manifest keeps the running one.
  const onHangup = (): void => {
    node.reload().catch((err: unknown) => {
      if (!isBerthError(err)) logger.error({ err }, 'reload failed');
    });
  };
  process.on('SIGHUP', onHangup);
  try {
    await node.start();
  } catch (err) {
    logger.error({ err: isBerthError(err) ? err.toJSON() : err }, isBerthError(err) ? err.message : 'the node failed to start');
    stopSignal.cancel();
    process.off('SIGHUP', onHangup);
    return ExitCode.FAILURE;
  }

  const signal = await stopSignal.promise;
  // While stopping, a hangup neither reloads nor kills the node halfway.
  const ignoreHangup = (): void => logger.warn('SIGHUP ignored: the node is stopping');
  process.off('SIGHUP', onHangup);
  process.on('SIGHUP', ignoreHangup);
  logger.info({ signal }, `${signal} received: stopping every instance within its grace (again to force)`);
  const force = (): void => {
    logger.warn('second signal: exiting now; the watchdog kills what is left');
    // Only the composition root may exit the process; the watchdog stops the instances.
    process.exit(130);
  };
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  await node.stop();
  process.off('SIGHUP', ignoreHangup);
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
  return ExitCode.OK;
}

function waitForStopSignal(): { promise: Promise<NodeJS.Signals>; cancel(): void } {
  const controller = new AbortController();
  const promise = Promise.race([
    once(process, 'SIGINT', { signal: controller.signal }).then(() => 'SIGINT' as const),
    once(process, 'SIGTERM', { signal: controller.signal }).then(() => 'SIGTERM' as const),
  ]).finally(() => controller.abort());
  // A cancelled wait rejects with AbortError; nobody awaits it then.
  promise.catch(() => {});
  return { promise, cancel: () => controller.abort() };
}
