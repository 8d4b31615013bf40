/**
 * `stowage completion bash|zsh|fish`: shell completion made from the command tree itself (commands,
 * their subcommands and long options), so it never drifts from the CLI. Zsh reads the bash script
 * through bashcompinit.
 */
import type { Command } from 'commander';
import { StowageError } from '../errors.js';

interface Node {
  name: string;
  options: string[];
  subcommands: Node[];
}

function tree(cmd: Command): Node {
  return {
    name: cmd.name(),
    options: cmd.options.map((o) => o.long).filter((l): l is string => Boolean(l)),
    subcommands: cmd.commands.map(tree),
  };
}

function bash(root: Node): string {
  const top = root.subcommands.map((c) => c.name).join(' ');
  const cases = root.subcommands
    .map((c) => {
      const words = [...c.subcommands.map((s) => s.name), ...c.options, '--help'].join(' ');
      const subs = c.subcommands
        .map((s) => `          ${s.name}) words="${[...s.options, '--help'].join(' ')}" ;;`)
        .join('\n');
      const inner = subs ? `\n        case "$sub" in\n${subs}\n        esac` : '';
      return `      ${c.name})\n        words="${words}"${inner} ;;`;
    })
    .join('\n');
  return `# stowage completion for bash: source <(stowage completion bash)
_stowage() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" cmd="" sub="" i w words=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in -*) ;; *) if [[ -z "$cmd" ]]; then cmd="$w"; elif [[ -z "$sub" ]]; then sub="$w"; fi ;; esac
  done
  if [[ -z "$cmd" ]]; then
    words="${top} ${root.options.join(' ')} --help"
  else
    case "$cmd" in
${cases}
    esac
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  # Past the command, anything else is a path or a reference: let the shell complete file names.
  if [[ \${#COMPREPLY[@]} -eq 0 && -n "$cmd" && "$cur" != -* ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o default -F _stowage stowage
`;
}

function fish(root: Node): string {
  const lines = ['# stowage completion for fish: stowage completion fish | source'];
  const names = root.subcommands.map((c) => c.name).join(' ');
  lines.push(`complete -c stowage -n '__fish_use_subcommand' -a '${names}'`);
  for (const c of root.subcommands) {
    const when = `__fish_seen_subcommand_from ${c.name}`;
    if (c.subcommands.length)
      lines.push(`complete -c stowage -n '${when}' -a '${c.subcommands.map((s) => s.name).join(' ')}'`);
    for (const o of new Set([...c.options, ...c.subcommands.flatMap((s) => s.options)])) {
      lines.push(`complete -c stowage -n '${when}' -l ${o.slice(2)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export function completionScript(program: Command, shell: string): string {
  const root = tree(program);
  if (shell === 'bash') return bash(root);
  if (shell === 'zsh') {
    return `# stowage completion for zsh: source <(stowage completion zsh)\nautoload -U +X bashcompinit && bashcompinit\n${bash(root)}`;
  }
  if (shell === 'fish') return fish(root);
  throw new StowageError('INVALID_ARGUMENT', `no completion for "${shell}"; give bash, zsh or fish`);
}

export function completionCommand(program: Command): void {
  program
    .command('completion')
    .summary('print shell completion: bash, zsh or fish')
    .description(
      'Prints a completion script for the shell. bash: source <(stowage completion bash), or write it to ' +
        '/etc/bash_completion.d/stowage. zsh: source <(stowage completion zsh). fish: stowage completion fish ' +
        '> ~/.config/fish/completions/stowage.fish.',
    )
    .argument('<shell>', 'bash, zsh or fish')
    .action((shell: string) => {
      process.stdout.write(completionScript(program, shell));
    });
}
