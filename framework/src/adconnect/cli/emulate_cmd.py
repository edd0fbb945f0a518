"""``adconnect emulate``: run a provider's emulator on loopback for demos and development."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from adconnect.cli._state import guarded, out, state
from adconnect.errors import ConfigurationError


@guarded
def emulate(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="Provider id.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).", min=0, max=65535)] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the fake data.")] = 0,
) -> None:
    """Serve the provider's API emulator (fake data, OAuth included) until Ctrl-C."""
    emulator = state(ctx).plugins().create_emulator(provider, seed=seed, port=port)
    if emulator is None:
        raise ConfigurationError(f"{provider} ships no emulator")
    with emulator:
        out.print(f"{provider} emulator on {emulator.url} (seed {seed})")
        oauth = getattr(emulator, "oauth", None)
        if oauth is not None:
            out.print(f"  OAuth client id {oauth.client_id}, redirect URIs {', '.join(oauth.redirect_uris)}")
            out.print(
                f"  (its client secret is in the emulator's source; "
                f"point ADCONNECT_{provider.upper()}_* here)"
            )
        out.print(f"  routes: {', '.join(emulator.routes)}")
        out.print("Press Ctrl-C to stop.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            out.print("emulator stopped.")
