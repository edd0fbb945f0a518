"""The template round trip a plugin author makes: render -> pip install -e -> listed -> tests pass.

It runs in a fresh virtual environment that sees the workspace's packages (so nothing is
downloaded) but whose own installs do not leak into the workspace environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from adconnect.template import PluginNames, find_template, render_plugin

ROOT = Path(__file__).resolve().parents[1]


def _run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture
def author_venv(tmp_path: Path) -> Path:
    """A new venv layered over this one: workspace packages visible, its installs its own."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz_workspace.pth").write_text(f"import site; site.addsitedir({str(purelib)!r})\n")
    return venv / "bin" / "python"


def test_the_template_is_the_sample_ads_plugin():
    template = find_template()
    assert template == ROOT / "plugin_template"
    text = (template / "pyproject.toml").read_text()
    assert 'sample_ads = "adconnect_sample_ads.provider:SampleAdsProvider"' in text


def test_rendering_replaces_every_spelling_of_the_name(tmp_path):
    files = render_plugin("acme_ads", tmp_path / "acme-ads")
    rendered = {p.relative_to(tmp_path / "acme-ads").as_posix() for p in files}
    assert {
        "pyproject.toml",
        "README.md",
        ".env.example",
        "src/adconnect_acme_ads/provider.py",
        "src/adconnect_acme_ads/emulator.py",
        "tests/test_contract.py",
    } <= rendered
    for path in files:
        text = path.read_text()
        assert not re.search(r"sample[_ -]?ads", text, re.IGNORECASE), f"{path} still names the sample"
    provider = (tmp_path / "acme-ads/src/adconnect_acme_ads/provider.py").read_text()
    assert "class AcmeAdsProvider(Provider)" in provider and 'provider_id = "acme_ads"' in provider
    assert "ADCONNECT_ACME_ADS_" in (tmp_path / "acme-ads/src/adconnect_acme_ads/settings.py").read_text()
    assert PluginNames("acme_ads").title == "Acme Ads"


def test_rendering_refuses_bad_names_and_existing_directories(tmp_path):
    from adconnect.errors import ConfigurationError

    for bad in ("Acme", "acme-ads", "9ads", "acme__ads", "sample_ads"):
        with pytest.raises(ConfigurationError):
            render_plugin(bad, tmp_path / bad)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        render_plugin("acme_ads", tmp_path / "taken")


@pytest.mark.slow
def test_template_round_trip(tmp_path, author_venv):
    dest = tmp_path / "plugins" / "acme-ads"
    created = _run(author_venv, "-m", "adconnect", "plugin", "new", "acme_ads", "--dest", dest)
    assert "adconnect-acme-ads" in created.stdout

    # the author's machine: no adconnect settings, the test server (if any) for the tests
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ADCONNECT_") or k == "ADCONNECT_TEST_DATABASE_URL"
    }
    before = json.loads(_run(author_venv, "-m", "adconnect", "providers", "list", "--json", env=env).stdout)
    assert "acme_ads" not in [p["provider_id"] for p in before["providers"]]

    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        author_venv,
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-e",
        dest,
        env=env,
    )
    after = json.loads(_run(author_venv, "-m", "adconnect", "providers", "list", "--json", env=env).stdout)
    acme = next(p for p in after["providers"] if p["provider_id"] == "acme_ads")
    assert (acme["distribution"], acme["version"], acme["contract_version"]) == (
        "adconnect-acme-ads",
        "0.1.0",
        "1.0",
    )
    assert after["problems"] == []

    # The rendered plugin's own tests, unedited, against a real PostgreSQL.
    result = _run(author_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", env=env, cwd=dest)
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b(1[0-9]|[2-9][0-9]) passed\b", summary), summary
    assert "failed" not in summary and "error" not in summary, summary
