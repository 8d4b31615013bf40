/**
 * Shell completion (`stowage completion`): the bash script, sourced by a real bash, completes commands,
 * subcommands and options from the CLI's own command tree; zsh reads it through bashcompinit; fish gets
 * one `complete` line per command and option.
 */
import { describe, expect, it } from 'vitest';
import { stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';

/** What bash offers for the words typed (the last one being completed). */
async function complete(script: string, words: string[]): Promise<string[]> {
  const program = `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _stowage; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await run('bash', ['-c', program]);
  return stdout.split('\n').filter(Boolean);
}

describe('stowage completion', () => {
  it('completes commands, subcommands and options in bash', async () => {
    const w = await workdir('completion');
    const r = await stowage(['completion', 'bash'], { env: w.env });
    expect(r.code).toBe(0);
    expect(await complete(r.stdout, ['stowage', 'pu'])).toEqual(['pull', 'push']);
    expect(await complete(r.stdout, ['stowage', 'pull', '--for'])).toEqual(['--format']);
    expect(await complete(r.stdout, ['stowage', 'archives', 'ex'])).toEqual(['export']);
    expect(await complete(r.stdout, ['stowage', 'archives', 'export', '--pl'])).toEqual(['--platform']);
    expect(await complete(r.stdout, ['stowage', 'copy', '--dest-a'])).toEqual(['--dest-authfile']);
    // Registered for the command.
    const { stdout } = await run('bash', ['-c', `${r.stdout}\ncomplete -p stowage`]);
    expect(stdout).toContain('-F _stowage stowage');
  });

  it('gives zsh the bash script through bashcompinit, fish its own lines, and refuses other shells', async () => {
    const w = await workdir('completion-other');
    const zsh = await stowage(['completion', 'zsh'], { env: w.env });
    expect(zsh.stdout).toContain('bashcompinit');
    expect(zsh.stdout).toContain('complete -o default -F _stowage stowage');
    const fish = await stowage(['completion', 'fish'], { env: w.env });
    expect(fish.stdout).toContain("complete -c stowage -n '__fish_use_subcommand' -a 'pull push copy");
    expect(fish.stdout).toContain("complete -c stowage -n '__fish_seen_subcommand_from inspect' -l format");
    const bad = await stowage(['completion', 'tcsh'], { env: w.env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('give bash, zsh or fish');
  });
});
