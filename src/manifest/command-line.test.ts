import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CommandLineError, needsShell, parseCommandLine, splitCommandLine } from './command-line.js';

describe('parseCommandLine', () => {
  it('splits-a-plain-line-into-file-and-args-without-a-shell', () => {
    assert.deepEqual(parseCommandLine('node charges.js --port 3000'), {
      line: 'node charges.js --port 3000',
      file: 'node',
      args: ['charges.js', '--port', '3000'],
      shell: false,
    });
  });

  it('keeps-quoted-words-together-and-drops-the-quotes', () => {
    assert.deepEqual(parseCommandLine(`node "my app.js" 'a b' x"y z"w`).args, ['my app.js', 'a b', 'xy zw']);
  });

  it('honours-backslash-escapes-outside-and-inside-double-quotes', () => {
    assert.deepEqual(parseCommandLine(String.raw`python my\ app.py "say \"hi\"" 'back\slash'`).args, ['my app.py', 'say "hi"', String.raw`back\slash`]);
  });

  it('keeps-empty-quoted-arguments', () => {
    assert.deepEqual(parseCommandLine(`prog "" ''`).args, ['', '']);
  });

  it('collapses-runs-of-blanks-and-tabs', () => {
    assert.deepEqual(parseCommandLine('  node \t a.js   b  '), { line: '  node \t a.js   b  ', file: 'node', args: ['a.js', 'b'], shell: false });
  });

  for (const line of ['node a.js | tee out.log', 'a && b', 'a; b', 'node a.js > out', 'echo $HOME', 'echo `date`', 'ls *.js', 'cd ~', 'echo (x)', 'a # comment', 'echo {a,b}', 'a\nb', 'echo !x', 'test [x]', 'a?b']) {
    it(`runs-shell-syntax-through-sh: ${JSON.stringify(line)}`, () => {
      assert.deepEqual(parseCommandLine(line), { line, file: '/bin/sh', args: ['-c', line], shell: true });
    });
  }

  it('runs-a-leading-variable-assignment-through-sh', () => {
    assert.deepEqual(parseCommandLine('FOO=1 node x.js'), { line: 'FOO=1 node x.js', file: '/bin/sh', args: ['-c', 'FOO=1 node x.js'], shell: true });
    assert.equal(needsShell('node --inspect=9229 x.js'), false);
  });

  it('takes-command-as-the-executable-when-args-are-given', () => {
    const spec = parseCommandLine('/opt/my tool/bin', ['--flag', 'a b', '$HOME']);
    assert.equal(spec.file, '/opt/my tool/bin');
    assert.deepEqual(spec.args, ['--flag', 'a b', '$HOME']);
    assert.equal(spec.shell, false);
  });

  it('refuses-unbalanced-quotes-and-empty-lines', () => {
    assert.throws(() => parseCommandLine('node "a.js'), CommandLineError);
    assert.throws(() => parseCommandLine("node 'a.js"), CommandLineError);
    assert.throws(() => parseCommandLine('   '), CommandLineError);
    assert.throws(() => parseCommandLine('', []), CommandLineError);
  });

  it('splitCommandLine-returns-no-words-for-blank-input', () => {
    assert.deepEqual(splitCommandLine(' \t '), []);
  });

  it('splits-back-any-words-that-were-quoted-and-joined', () => {
    // Words free of shell syntax and newlines: the set a direct (shell-less) launch can carry.
    const word = fc.string({ unit: fc.constantFrom(...'ab z"\'\\-_./=:1\t'.split('')), maxLength: 8 });
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 6 }), (words) => {
        const line = words.map((w) => `"${w.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`).join(' ');
        assert.deepEqual(splitCommandLine(line), words);
      }),
    );
  });
});
