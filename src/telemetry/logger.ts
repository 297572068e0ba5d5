import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };
export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  format: LogFormat;
  level: string;
  /** Where lines go; default stdout. */
  destination?: DestinationStream;
}

/**
 * Berth's one logger. JSON lines with a fixed schema (`time`, `level`, `msg`,
 * plus the concept fields `node`, `group`, `service`, `version`, `instance`);
 * pretty-printed in-process (no worker thread) when a person is watching.
 */
export function createLogger(options: LoggerOptions): Logger {
  const base = {
    level: options.level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (options.format === 'pretty') {
    const stream = pretty({
      colorize: process.stdout.isTTY,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,node',
      destination: options.destination ? undefined : 1,
      sync: true,
      messageFormat: '{if instance}[{instance}] {end}{msg}',
      hideObject: false,
    });
    return pino(base, options.destination ?? stream);
  }
  return pino(base, options.destination ?? pino.destination({ dest: 1, sync: true }));
}
