"""``trunner completion bash|zsh|fish|powershell``: a shell completion script for every command, flag and
known value, generated from the same parser that reads the command line."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import attrs

from trunner.process import exits

SHELLS = ("bash", "zsh", "fish", "powershell")
_PATH_FLAGS = {"--file", "--config", "--jobs", "--kubeconfig"}


@attrs.frozen
class Flag:
    names: tuple[str, ...]
    help: str
    takes_value: bool
    values: tuple[str, ...] = ()
    path: bool = False


@attrs.frozen
class Command:
    name: str
    help: str
    flags: tuple[Flag, ...]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "completion",
        help="Print a shell completion script (bash, zsh, fish or powershell).",
        description="Print a completion script for trunner's commands, flags and their values.",
    )
    parser.add_argument("shell", choices=SHELLS, metavar="|".join(SHELLS), help="The shell to complete in.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    commands = describe(args.root_parser)
    sys.stdout.write({"bash": bash, "zsh": zsh, "fish": fish, "powershell": powershell}[args.shell](commands))
    return exits.OK


def describe(parser: argparse.ArgumentParser) -> list[Command]:
    commands = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                commands.append(Command(name, _plain(helps.get(name, "")), tuple(_flags(sub))))
    return commands


def _flags(parser: argparse.ArgumentParser) -> list[Flag]:
    flags = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        values = getattr(action, "completions", None) or action.choices or ()
        flags.append(
            Flag(
                names=tuple(action.option_strings),
                help=_plain(action.help or ""),
                takes_value=action.nargs != 0,
                values=tuple(str(v) for v in values),
                path=bool(_PATH_FLAGS.intersection(action.option_strings)),
            )
        )
    return flags


def _plain(text: str) -> str:
    """Help text fit for a completion menu: first sentence, no brackets, quotes or colons."""
    first = re.sub(r"\s*\[env .*", "", text).split(". ")[0].rstrip(".")
    return re.sub(r"[\[\]'\"`:$\\]", "", first)[:80]


def bash(commands: list[Command]) -> str:
    cases = []
    for command in commands:
        options = " ".join(name for flag in command.flags for name in flag.names)
        values = []
        for flag in command.flags:
            pattern = "|".join(flag.names)
            if flag.values:
                values.append(
                    f'                {pattern}) COMPREPLY=($(compgen -W "{" ".join(flag.values)}" -- "$cur")); return ;;'
                )
            elif flag.path:
                values.append(f'                {pattern}) COMPREPLY=($(compgen -f -- "$cur")); return ;;')
        positional = [c for c in SHELLS if command.name == "completion"]
        cases.append(
            f"        {command.name})\n"
            f'            case "$prev" in\n'
            + "\n".join(values)
            + ("\n" if values else "")
            + "            esac\n"
            f'            COMPREPLY=($(compgen -W "{options} {" ".join(positional)}" -- "$cur")) ;;'
        )
    names = " ".join(command.name for command in commands)
    return f"""# bash completion for trunner; load with: source <(trunner completion bash)
_trunner() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" command="" word
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) command="$word"; break ;; esac
    done
    case "$command" in
{chr(10).join(cases)}
        *) COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur")) ;;
    esac
}}
complete -o default -F _trunner trunner
"""


def zsh(commands: list[Command]) -> str:
    described = " ".join(f"'{command.name}:{command.help}'" for command in commands)
    cases = []
    for command in commands:
        specs = []
        for flag in command.flags:
            names = "{" + ",".join(flag.names) + "}" if len(flag.names) > 1 else flag.names[0]
            action = ""
            if flag.takes_value:
                action = (
                    ":value:_files"
                    if flag.path
                    else f":value:({' '.join(flag.values)})"
                    if flag.values
                    else ":value: "
                )
            specs.append(f"'{names}[{flag.help}]{action}'")
        if command.name == "completion":
            specs.append(f"'1:shell:({' '.join(SHELLS)})'")
        cases.append(f"        {command.name}) _arguments {' '.join(specs)} ;;")
    return f"""#compdef trunner
# zsh completion for trunner; install with: trunner completion zsh > "${{fpath[1]}}/_trunner"
_trunner() {{
    local -a commands
    commands=({described})
    if (( CURRENT == 2 )); then
        _describe 'command' commands
        return
    fi
    local command=$words[2]
    shift words; (( CURRENT-- ))
    case $command in
{chr(10).join(cases)}
    esac
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _trunner "$@"; else compdef _trunner trunner; fi
"""


def fish(commands: list[Command]) -> str:
    names = " ".join(command.name for command in commands)
    lines = [
        "# fish completion for trunner; install with: trunner completion fish > ~/.config/fish/completions/trunner.fish",
        "complete -c trunner -f",
    ]
    for command in commands:
        lines.append(
            f"complete -c trunner -n 'not __fish_seen_subcommand_from {names}' -a {command.name} -d '{command.help}'"
        )
        for flag in command.flags:
            parts = [f"complete -c trunner -n '__fish_seen_subcommand_from {command.name}'"]
            for name in flag.names:
                parts.append(f"-l {name[2:]}" if name.startswith("--") else f"-s {name[1:]}")
            if flag.takes_value:
                parts.append("-r -F" if flag.path else "-r")
                if flag.values:
                    parts.append(f"-a '{' '.join(flag.values)}'")
            parts.append(f"-d '{flag.help}'")
            lines.append(" ".join(parts))
        if command.name == "completion":
            lines.append(
                f"complete -c trunner -n '__fish_seen_subcommand_from completion' -a '{' '.join(SHELLS)}'"
            )
    return "\n".join(lines) + "\n"


def _ps(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def powershell(commands: list[Command]) -> str:
    """A ``Register-ArgumentCompleter -Native`` script: commands, their flags, and known values."""
    entries = []
    for command in commands:
        flags = []
        for flag in command.flags:
            values = ", ".join(_ps(v) for v in flag.values)
            for name in flag.names:
                flags.append(
                    f"            {_ps(name)} = @{{ Help = {_ps(flag.help or name)}; Values = @({values}) }}"
                )
        positional = ", ".join(_ps(s) for s in SHELLS) if command.name == "completion" else ""
        entries.append(
            f"    {_ps(command.name)} = @{{\n        Help = {_ps(command.help or command.name)}\n"
            f"        Args = @({positional})\n        Flags = @{{\n" + "\n".join(flags) + "\n        }\n    }"
        )
    return (
        "# powershell completion for trunner; load with: trunner completion powershell | Out-String | Invoke-Expression\n"
        "$__trunnerCommands = @{\n"
        + "\n".join(entries)
        + "\n}\n"
        + r"""Register-ArgumentCompleter -Native -CommandName trunner -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $words = @($commandAst.CommandElements | Select-Object -Skip 1 | ForEach-Object { $_.ToString() })
    if ($wordToComplete -ne '' -and $words.Count -gt 0) { $words = @($words | Select-Object -SkipLast 1) }
    $command = $words | Where-Object { -not $_.StartsWith('-') } | Select-Object -First 1
    $result = @()
    if (-not $command) {
        foreach ($name in $__trunnerCommands.Keys) {
            if ($name -like "$wordToComplete*") {
                $result += [System.Management.Automation.CompletionResult]::new($name, $name, 'Command', $__trunnerCommands[$name].Help)
            }
        }
    } else {
        $spec = $__trunnerCommands[$command]
        if ($spec) {
            $previous = if ($words.Count -gt 0) { $words[-1] } else { '' }
            if ($spec.Flags.ContainsKey($previous) -and $spec.Flags[$previous].Values.Count -gt 0) {
                foreach ($value in $spec.Flags[$previous].Values) {
                    if ($value -like "$wordToComplete*") {
                        $result += [System.Management.Automation.CompletionResult]::new($value, $value, 'ParameterValue', $value)
                    }
                }
            } else {
                foreach ($flag in $spec.Flags.Keys) {
                    if ($flag -like "$wordToComplete*") {
                        $result += [System.Management.Automation.CompletionResult]::new($flag, $flag, 'ParameterName', $spec.Flags[$flag].Help)
                    }
                }
                foreach ($value in $spec.Args) {
                    if ($value -like "$wordToComplete*") {
                        $result += [System.Management.Automation.CompletionResult]::new($value, $value, 'ParameterValue', $value)
                    }
                }
            }
        }
    }
    $result | Sort-Object -Property ListItemText
}
"""
    )
