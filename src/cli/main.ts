import { Command, CommanderError, Option } from 'commander';
import { isBerthError } from '../errors.js';
import { ExitCode } from './exit-codes.js';
import { up } from './commands/up.js';
import { status } from './commands/status.js';
import { validate } from './commands/validate.js';
import { reload } from './commands/reload.js';
import { plan } from './commands/plan.js';
import { tokenCreate, tokenList, tokenRevoke } from './commands/token.js';
import { apiKeyCreate, apiKeyList, apiKeyRevoke } from './commands/apikey.js';
import { ROLES, type Role } from '../admin/tokens.js';

const DEFAULT_MANIFEST = 'berth.yaml';
const TOKEN_HELP = 'bearer token for the admin API (default: $BERTH_TOKEN, else the admin-token file in the node\'s data dir)';

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
      .option('--token <token>', TOKEN_HELP)
      .option('--all', 'include stopped instances (history)')
      .option('--json', 'print JSON for scripts')
      .action(async (opts: { file: string; admin?: string; token?: string; all?: boolean; json?: boolean }) => {
        exitCode = await status(opts, process.stdout);
      });
  }

  program
    .command('reload')
    .description('make the running node re-read its manifest and apply it without a restart (changed versions are replaced one instance at a time)')
    .option('-f, --file <file>', 'manifest whose node to reload (finds its admin address); the node re-reads the file it runs', DEFAULT_MANIFEST)
    .option('--admin <url>', 'admin API of the node (default: $BERTH_ADMIN, else from the manifest)')
      .option('--token <token>', TOKEN_HELP)
    .option('--json', 'print JSON for scripts')
    .action(async (opts: { file: string; admin?: string; token?: string; json?: boolean }) => {
      exitCode = await reload(opts, process.stdout, process.stderr);
    });

  program
    .command('plan')
    .description('print what `berth reload` would change on the running node; applies nothing')
    .option('-f, --file <file>', 'manifest whose node to ask (finds its admin address); the node reads the file it runs', DEFAULT_MANIFEST)
    .option('--admin <url>', 'admin API of the node (default: $BERTH_ADMIN, else from the manifest)')
      .option('--token <token>', TOKEN_HELP)
    .option('--json', 'print JSON for scripts')
    .action(async (opts: { file: string; admin?: string; token?: string; json?: boolean }) => {
      exitCode = await plan(opts, process.stdout, process.stderr);
    });

  const token = program.command('token').description('manage the bearer tokens of the running node\'s admin API (admin role)');
  const nodeOptions = (command: Command): Command =>
    command
      .option('-f, --file <file>', 'manifest whose node to ask (finds its admin address and token)', DEFAULT_MANIFEST)
      .option('--admin <url>', 'admin API of the node (default: $BERTH_ADMIN, else from the manifest)')
      .option('--token <token>', TOKEN_HELP)
      .option('--json', 'print JSON for scripts');
  type NodeOpts = { file: string; admin?: string; token?: string; json?: boolean };
  nodeOptions(
    token
      .command('create')
      .description('create a token; its secret is printed once, alone on stdout')
      .requiredOption('--name <name>', 'who or what holds it: 1-64 letters, digits, ".", "_", "-"')
      .addOption(new Option('--role <role>', 'what it may do').choices([...ROLES]).makeOptionMandatory()),
  ).action(async (opts: NodeOpts & { name: string; role: Role }) => {
    exitCode = await tokenCreate(opts, process.stdout, process.stderr);
  });
  nodeOptions(token.command('list').description('table of the tokens: id, name, role, created, last used (never a secret)')).action(async (opts: NodeOpts) => {
    exitCode = await tokenList(opts, process.stdout);
  });
  nodeOptions(token.command('revoke').description('revoke a token: refused from now on').argument('<id>', 'the token\'s id (berth token list)')).action(
    async (id: string, opts: NodeOpts) => {
      exitCode = await tokenRevoke({ ...opts, id }, process.stdout, process.stderr);
    },
  );

  const apikey = program.command('apikey').description('manage the API keys the gateway accepts (x-api-key): list as operator, create and revoke as admin');
  const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];
  nodeOptions(
    apikey
      .command('create')
      .description('create an API key for the services of some groups; its secret is printed once, alone on stdout')
      .argument('<name>', 'who or what holds it: 1-64 letters, digits, ".", "_", "-"')
      .requiredOption('--group <group>', 'a group whose services accept the key ("*": every group); repeat for more', collect)
      .option('--subject <subject>', 'the caller\'s subject, as authorize rules and instances see it (default: the name)')
      .option('--role <role>', 'a role of the caller; repeat for more', collect)
      .option('--scope <scope>', 'a scope of the caller; repeat for more', collect),
  ).action(async (name: string, opts: NodeOpts & { group: string[]; subject?: string; role?: string[]; scope?: string[] }) => {
    exitCode = await apiKeyCreate({ ...opts, name, groups: opts.group, roles: opts.role ?? [], scopes: opts.scope ?? [] }, process.stdout, process.stderr);
  });
  nodeOptions(apikey.command('list').description('table of the API keys: id, name, groups, subject, roles, scopes, created, last used (never a secret)')).action(
    async (opts: NodeOpts) => {
      exitCode = await apiKeyList(opts, process.stdout);
    },
  );
  nodeOptions(apikey.command('revoke').description('revoke an API key: the gateway refuses it from now on').argument('<id>', 'the key\'s id (berth apikey list)')).action(
    async (id: string, opts: NodeOpts) => {
      exitCode = await apiKeyRevoke({ ...opts, id }, process.stdout, process.stderr);
    },
  );

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
      if (err.code === 'BERTH_ERR_NODE_UNREACHABLE') return ExitCode.NODE_UNREACHABLE;
      if (err.code === 'BERTH_ERR_UNAUTHORIZED' || err.code === 'BERTH_ERR_FORBIDDEN') return ExitCode.NOT_AUTHORIZED;
      return ExitCode.FAILURE;
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
