import { Command, CommanderError, Option } from 'commander';
import { isBerthError } from '../errors.js';
import { ExitCode } from './exit-codes.js';
import { up } from './commands/up.js';
import { status } from './commands/status.js';
import { validate } from './commands/validate.js';
import { reload } from './commands/reload.js';
import { plan } from './commands/plan.js';

const DEFAULT_MANIFEST = 'berth.yaml';

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let exitCode: number = ExitCode.OK;
  const program = new Command('berth')
    .description('Run, register, check and supervise a team\'s services.')
    .version(await packageVersion(), '-v, --version')
    .showHelpAfterError('(run berth --help for usage)')
    .exitOverride();

  program
    .command('up')
    .description('run a node from a manifest, in the foreground (Ctrl-C stops it and its instances)')
    .option('-f, --file <file>', 'manifest file', DEFAULT_MANIFEST)
    .addOption(new Option('--log-format <format>', 'log format (default: pretty on a terminal, json otherwise)').choices(['json', 'pretty']))
    .addOption(new Option('--log-level <level>', 'log level (default: the manifest\'s log.level)').choices(['trace', 'debug', 'info', 'warn', 'error']))
    .action(async (opts: { file: string; logFormat?: 'json' | 'pretty'; logLevel?: string }) => {
      exitCode = await up(opts);
    });

  for (const name of ['status', 'ps']) {
    program
      .command(name)
      .description(name === 'ps' ? 'same as status' : 'table of groups, services and instances of the running node')
      .option('-f, --file <file>', 'manifest whose node to ask (finds its admin address)', DEFAULT_MANIFEST)
      .option('--admin <url>', 'admin API of the node (default: $BERTH_ADMIN, else from the manifest)')
      .option('--all', 'include stopped instances (history)')
      .option('--json', 'print JSON for scripts')
      .action(async (opts: { file: string; admin?: string; all?: boolean; json?: boolean }) => {
        exitCode = await status(opts, process.stdout);
      });
  }

  program
    .command('reload')
    .description('make the running node re-read its manifest and apply it without a restart (changed versions are replaced one instance at a time)')
    .option('-f, --file <file>', 'manifest whose node to reload (finds its admin address); the node re-reads the file it runs', DEFAULT_MANIFEST)
    .option('--admin <url>', 'admin API of the node (default: $BERTH_ADMIN, else from the manifest)')
    .option('--json', 'print JSON for scripts')
    .action(async (opts: { file: string; admin?: string; json?: boolean }) => {
      exitCode = await reload(opts, process.stdout, process.stderr);
    });

  program
    .command('plan')
    .description('print what `berth reload` would change on the running node; applies nothing')
    .option('-f, --file <file>', 'manifest whose node to ask (finds its admin address); the node reads the file it runs', DEFAULT_MANIFEST)
    .option('--admin <url>', 'admin API of the node (default: $BERTH_ADMIN, else from the manifest)')
    .option('--json', 'print JSON for scripts')
    .action(async (opts: { file: string; admin?: string; json?: boolean }) => {
      exitCode = await plan(opts, process.stdout, process.stderr);
    });

  program
    .command('validate')
    .description('check a manifest and print every problem with file:line')
    .argument('[file]', 'manifest file')
    .option('-f, --file <file>', 'manifest file', DEFAULT_MANIFEST)
    .option('--json', 'print JSON for scripts')
    .action(async (file: string | undefined, opts: { file: string; json?: boolean }) => {
      exitCode = await validate(file ?? opts.file, { json: opts.json ?? false }, process.stdout);
    });

  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed.
      return err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
    }
    if (isBerthError(err)) {
      process.stderr.write(`berth: ${err.message}\n`);
      return err.code === 'BERTH_ERR_NODE_UNREACHABLE' ? ExitCode.NODE_UNREACHABLE : ExitCode.FAILURE;
    }
    throw err;
  }
  return exitCode;
}

async function packageVersion(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
