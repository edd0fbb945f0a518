"""``adconnect plugin new``: start a provider plugin from the template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adconnect.cli._state import guarded, out
from adconnect.template import PluginNames, render_plugin

app = typer.Typer(help="Write new provider plugins.", no_args_is_help=True)


@app.command()
@guarded
def new(
    provider_id: Annotated[str, typer.Argument(help="Permanent snake_case id, e.g. acme_ads.")],
    dest: Annotated[
        Path | None, typer.Option(help="Directory to create (default: plugins/<kebab-name>).")
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="Human name (default: from the id).")] = None,
) -> None:
    """Render plugin_template/ into a complete, installable provider distribution."""
    names = PluginNames(provider_id)
    target = dest or Path("plugins") / names.kebab
    files = render_plugin(provider_id, target, display_name=display_name)
    out.print(
        f"created {target} ({len(files)} files): distribution adconnect-{names.kebab}, "
        f"package adconnect_{names.snake}"
    )
    out.print("next steps:")
    out.print(f"  .venv/bin/pip install -e {target}      # or: uv pip install -e {target}")
    out.print("  adconnect providers list                # shows " + provider_id)
    out.print(f"  .venv/bin/python -m pytest {target}   # runs the contract suite against its emulator")
    out.print(f"  then fill in the TODOs listed in {target / 'README.md'}")
