"""Render ``plugin_template/`` into a new provider distribution.

The template is a complete, working provider named ``sample_ads``. Rendering copies it and
replaces the five spellings of that name (``sample_ads``, ``sample-ads``, ``SampleAds``,
``SAMPLE_ADS``, ``Sample Ads``) in file contents and paths with the new provider's.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import adconnect
from adconnect.errors import ConfigurationError
from adconnect.models import PROVIDER_ID_PATTERN

__all__ = ["PluginNames", "find_template", "render_plugin"]

TEMPLATE_ENV = "ADCONNECT_PLUGIN_TEMPLATE"
_SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".venv"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True)
class PluginNames:
    """Every spelling of a provider's name that the template uses."""

    snake: str

    @property
    def kebab(self) -> str:
        return self.snake.replace("_", "-")

    @property
    def camel(self) -> str:
        return "".join(part.capitalize() for part in self.snake.split("_"))

    @property
    def upper(self) -> str:
        return self.snake.upper()

    @property
    def title(self) -> str:
        return " ".join(part.capitalize() for part in self.snake.split("_"))

    def replacements(self, title: str | None = None) -> list[tuple[str, str]]:
        sample = PluginNames("sample_ads")
        return [
            (sample.title, title or self.title),
            (sample.camel, self.camel),
            (sample.upper, self.upper),
            (sample.kebab, self.kebab),
            (sample.snake, self.snake),
        ]


def find_template() -> Path:
    """The template directory: ``$ADCONNECT_PLUGIN_TEMPLATE``, the checkout's, or the packaged copy."""
    configured = os.environ.get(TEMPLATE_ENV)
    candidates = [Path(configured)] if configured else []
    here = Path(adconnect.__file__).resolve().parent
    candidates += [parent / "plugin_template" for parent in here.parents][:4]
    candidates.append(here / "_plugin_template")
    for candidate in candidates:
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise ConfigurationError(
        "the plugin template is missing from this installation",
        hint=f"set {TEMPLATE_ENV} to a checkout's plugin_template/ directory",
    )


def render_plugin(
    provider_id: str, dest: Path, *, display_name: str | None = None, template: Path | None = None
) -> list[Path]:
    """Render the template for ``provider_id`` into ``dest`` (which must not exist or be empty)."""
    if not re.match(PROVIDER_ID_PATTERN, provider_id) or len(provider_id) > 63:
        raise ConfigurationError(
            f"{provider_id!r} is not a valid provider id",
            hint="use snake_case letters and digits, e.g. acme_ads; it is permanent",
        )
    if provider_id == "sample_ads":
        raise ConfigurationError("sample_ads is the template's own name; choose another")
    if dest.exists() and any(dest.iterdir()):
        raise ConfigurationError(
            f"{dest} already exists and is not empty", hint="choose another --dest or remove the directory"
        )
    source = template or find_template()
    pairs = PluginNames(provider_id).replacements(display_name)
    written: list[Path] = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part in _SKIP for part in relative.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        target = dest / _replace(str(relative), pairs)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            shutil.copy2(path, target)
        else:
            target.write_text(_replace(content, pairs), encoding="utf-8")
            shutil.copymode(path, target)
        written.append(target)
    return written


def _replace(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text
