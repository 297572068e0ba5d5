import type { CommandSpec } from './types.js';

/**
 * Characters that only a shell gives meaning to. A line containing any of them
 * (anywhere, even inside quotes: we do not second-guess the shell) runs through
 * `/bin/sh -c`; anything else is split here and run directly, so the instance's
 * pid is the program's own and signals reach it without a shell in between.
 */
const SHELL_SYNTAX = /[|&;<>()$`*?[\]{}~!#\n\r]/;

/** Thrown by `splitCommandLine` for a line that cannot be split into words. */
export class CommandLineError extends Error {
  override name = 'CommandLineError';
}

/** Whether `line` needs `/bin/sh` to mean what it says. */
export function needsShell(line: string): boolean {
  if (SHELL_SYNTAX.test(line)) return true;
  // `FOO=1 node x` sets a variable for one command: only a shell does that.
  const firstWord = line.trimStart().split(/[ \t]/, 1)[0] ?? '';
  return firstWord.includes('=');
}

/**
 * Splits a command line into words the way a POSIX shell would for a line
 * without expansions: blanks separate words, single quotes keep everything
 * literally, double quotes keep everything but `\"` and `\\`, and a backslash
 * outside quotes takes the next character literally.
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const ch = line[i] as string;
    if (ch === ' ' || ch === '\t') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      i++;
      continue;
    }
    inWord = true;
    if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      if (end === -1) throw new CommandLineError("unterminated single quote (')");
      word += line.slice(i + 1, end);
      i = end + 1;
    } else if (ch === '"') {
      i++;
      let closed = false;
      while (i < line.length) {
        const c = line[i] as string;
        if (c === '"') {
          closed = true;
          i++;
          break;
        }
        if (c === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) {
          word += line[i + 1];
          i += 2;
        } else {
          word += c;
          i++;
        }
      }
      if (!closed) throw new CommandLineError('unterminated double quote (")');
    } else if (ch === '\\') {
      if (i + 1 >= line.length) throw new CommandLineError('a backslash at the end of the line escapes nothing');
      word += line[i + 1];
      i += 2;
    } else {
      word += ch;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/**
 * The launch recipe for a manifest `command` (and optional `args`). With `args`,
 * `command` is the executable itself: no shell, no splitting.
 * Throws `CommandLineError` for an empty line or unbalanced quotes.
 */
export function parseCommandLine(command: string, args?: readonly string[]): CommandSpec {
  if (args !== undefined) {
    if (command.trim() === '') throw new CommandLineError('the command is empty');
    return { line: [command, ...args].map(quoteForDisplay).join(' '), file: command, args: [...args], shell: false };
  }
  if (command.trim() === '') throw new CommandLineError('the command is empty');
  if (needsShell(command)) return { line: command, file: '/bin/sh', args: ['-c', command], shell: true };
  const [file, ...rest] = splitCommandLine(command);
  if (file === undefined || file === '') throw new CommandLineError('the command names no program');
  return { line: command, file, args: rest, shell: false };
}

function quoteForDisplay(word: string): string {
  return word !== '' && /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
