"""docs/cli.md, the CLI reference, generated from the commands' own --help (a test keeps it in sync).

    python -m snn_deploy.cli_reference > docs/cli.md
"""

from __future__ import annotations

import click

from snn_deploy.cli import cli

HEADER = """# CLI reference

Generated from `snn-deploy COMMAND --help` by `python -m snn_deploy.cli_reference > docs/cli.md`;
`tests/test_cli_reference.py` fails when this file and the commands disagree. Exit status: 0 on
success, 2 on bad input (one line on stderr, no output file left behind), 1 on an internal error,
130 on Ctrl-C, 143 on SIGTERM and 129 on SIGHUP (Lava runtimes stopped, nothing written). What
each reader refuses, and why: [security.md](security.md).
"""


def reference() -> str:
    ctx = click.Context(cli, info_name="snn-deploy", terminal_width=100, max_content_width=100,
                        **cli.context_settings)
    parts = [HEADER, "```", cli.get_help(ctx), "```"]
    for name in sorted(cli.list_commands(ctx)):
        command = cli.get_command(ctx, name)
        assert command is not None
        sub = click.Context(command, info_name=name, parent=ctx, terminal_width=100,
                            max_content_width=100, **cli.context_settings)
        parts += ["", f"## snn-deploy {name}", "", "```", command.get_help(sub), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
