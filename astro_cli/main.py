"""Entry point of `astro`. Each module in astro_cli/commands adds its commands via `register(app)`,
so a new command is a new file, not an edit here."""

from __future__ import annotations

import importlib
import pkgutil

import typer

from astro_cli import commands

app = typer.Typer(
    name="astro",
    help="ASTRO: teach language models to reason by searching in context.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
    module.register(app)


if __name__ == "__main__":
    app()
