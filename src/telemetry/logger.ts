import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';
import { CENSOR, createScrubber, redactPaths, scrubbingSerializers } from './redact.js';

export type { Logger };
export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  format: LogFormat;
  level: string;
  /** Where lines go; default stdout. */
  destination?: DestinationStream;
  /** Field names or pino paths to redact besides Berth's own list (the manifest's `log.redact`). */
  redact?: readonly string[];
}

/** Fields every line may carry; the pretty format shows them as a prefix, not as key=value. */
const CONTEXT_FIELDS = new Set(['time', 'level', 'msg', 'node', 'group', 'service', 'version', 'instance', 'event', 'stream', 'pid', 'hostname']);

/**
 * Berth's one logger. JSON lines with a fixed schema (`time`, `level`, `msg`,
 * `event`, plus the concept fields `node`, `group`, `service`, `version`,
 * `instance`); pretty-printed in-process (no worker thread) when a person is
 * watching: one line per event, instance output prefixed with its instance id.
 *
 * Secrets never reach a line as written (redact.ts): secret-named fields
 * are censored as `[redacted]` at the top of a line and in the objects lines
 * carry, and the message, the free-text fields and errors are scrubbed of
 * the secrets they quote.
 */
export function createLogger(options: LoggerOptions): Logger {
  const extra = options.redact ?? [];
  const base = {
    level: options.level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    redact: { paths: redactPaths(extra), censor: CENSOR },
    serializers: scrubbingSerializers(createScrubber(extra)),
  };
  if (options.format === 'pretty') {
    const stream = pretty({
      colorize: process.stdout.isTTY,
      translateTime: 'SYS:HH:MM:ss.l',
      destination: options.destination ?? 1,
      sync: true,
      hideObject: true,
      messageFormat: (log, messageKey) => prettyLine(log, messageKey),
    });
    return pino(base, stream);
  }
  if (options.destination) return pino(base, options.destination);
  // Buffered, flushed every FLUSH_MS and at exit: one write(2) per line cost a
  // third of the gateway's throughput with the access log on (bench/gateway).
  const destination = pino.destination({ dest: 1, sync: false, minLength: BUFFER_BYTES });
  setInterval(() => destination.flush(), FLUSH_MS).unref();
  return pino(base, destination);
}

/** Lines wait at most this long in the buffer, so a person or a test tailing the log sees them promptly. */
const FLUSH_MS = 100;
const BUFFER_BYTES = 8 * 1024;

function prettyLine(log: Record<string, unknown>, messageKey: string): string {
  const prefix = typeof log.instance === 'string' ? `[${log.instance}] ` : typeof log.service === 'string' ? `[${log.service}] ` : '';
  const extras = Object.entries(log)
    .filter(([key, value]) => !CONTEXT_FIELDS.has(key) && key !== messageKey && value !== undefined && value !== null)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  const message = log[messageKey];
  const msg = typeof message === 'string' ? message : '';
  return `${prefix}${msg}${extras.length > 0 ? `  ${extras.join(' ')}` : ''}`;
}
