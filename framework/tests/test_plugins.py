"""Loading plugins from real entry points: good ones load, broken ones are reported and skipped.

Each test writes small distributions (a module plus a ``.dist-info`` with ``entry_points.txt``)
into a directory on ``sys.path``, which is exactly what ``pip install`` leaves behind.
"""

from __future__ import annotations

import sys

import pytest

from adconnect.plugins import contract_compatible, load_plugins

from .conftest import provider_class_name as _cls
from .conftest import provider_source as _provider


def test_a_provider_loads_from_its_entry_point_with_distribution_facts(site):
    site(
        "adconnect-alpha-ads",
        "alpha_ads",
        "alpha_ads_plugin",
        _provider("alpha_ads"),
        target=f"alpha_ads_plugin:{_cls('alpha_ads')}",
    )
    host = load_plugins()
    assert "alpha_ads" in host.provider_ids()
    record = host.records["alpha_ads"]
    assert (record.distribution, record.distribution_version) == ("adconnect-alpha-ads", "1.4.0")
    assert record.info.contract_version == "1.0"
    assert not [p for p in host.problems if p.name == "alpha_ads"]


def test_broken_plugins_are_reported_and_the_others_keep_working(site):
    site(
        "adconnect-good-ads",
        "good_ads",
        "good_ads_plugin",
        _provider("good_ads"),
        target=f"good_ads_plugin:{_cls('good_ads')}",
    )
    site(
        "adconnect-broken-ads",
        "broken_ads",
        "broken_ads_plugin",
        "import not_a_module_anywhere\n",
        target="broken_ads_plugin:Nope",
    )
    site(
        "adconnect-future-ads",
        "future_ads",
        "future_ads_plugin",
        _provider("future_ads", contract="2.0"),
        target=f"future_ads_plugin:{_cls('future_ads')}",
    )
    site(
        "adconnect-newer-ads",
        "newer_ads",
        "newer_ads_plugin",
        _provider("newer_ads", contract="1.9"),
        target=f"newer_ads_plugin:{_cls('newer_ads')}",
    )
    site(
        "adconnect-typo-ads",
        "typo_ads",
        "typo_ads_plugin",
        _provider(
            "typo_ads",
            extra="    @hookimpl\n    def adconnect_read_streams(self, request):\n        return []\n",
        ),
        target=f"typo_ads_plugin:{_cls('typo_ads')}",
    )
    site(
        "adconnect-liar-ads",
        "liar_ads",
        "liar_ads_plugin",
        _provider("other_name"),
        target=f"liar_ads_plugin:{_cls('other_name')}",
    )
    host = load_plugins()
    assert "good_ads" in host.provider_ids()
    problems = {p.name: p for p in host.problems}
    assert problems["broken_ads"].kind == "import_error"
    assert "not_a_module_anywhere" in problems["broken_ads"].message
    assert "ADCONNECT_DISABLE_PLUGINS=broken_ads" in problems["broken_ads"].hint
    assert problems["future_ads"].kind == "incompatible_contract"
    assert "built for plugin contract 2.0" in problems["future_ads"].message
    assert problems["newer_ads"].kind == "incompatible_contract"
    assert problems["typo_ads"].kind == "contract_violation"
    assert "adconnect_read_streams" in problems["typo_ads"].message
    assert problems["liar_ads"].kind == "contract_violation"
    assert problems["liar_ads"].distribution == "adconnect-liar-ads"
    for name in ("broken_ads", "future_ads", "newer_ads", "typo_ads", "liar_ads"):
        assert name not in host.provider_ids()


def test_missing_required_hooks_and_missing_contract_version_are_refused(site):
    lazy = """
import adconnect
from adconnect import Provider

class LazyProvider(Provider):
    provider_id = "lazy_ads"
    display_name = "Lazy"
    contract_version = "1.0"

class AnonProvider(Provider):
    provider_id = "anon_ads"
    display_name = "Anon"
"""
    site("adconnect-lazy-ads", "lazy_ads", "lazy_ads_plugin", lazy, target="lazy_ads_plugin:LazyProvider")
    site("adconnect-anon-ads", "anon_ads", "anon_ads_plugin", lazy, target="anon_ads_plugin:AnonProvider")
    host = load_plugins()
    problems = {p.name: p for p in host.problems}
    assert "adconnect_declare_streams" in problems["lazy_ads"].message
    assert "adconnect_exchange_code" in problems["lazy_ads"].message  # OAuth providers need it
    assert problems["anon_ads"].kind == "incompatible_contract"
    assert "contract_version" in problems["anon_ads"].hint


def test_disabled_plugins_do_not_load(site):
    site(
        "adconnect-quiet-ads",
        "quiet_ads",
        "quiet_ads_plugin",
        _provider("quiet_ads"),
        target=f"quiet_ads_plugin:{_cls('quiet_ads')}",
    )
    host = load_plugins(disabled={"quiet_ads"})
    assert "quiet_ads" not in host.provider_ids()
    assert [p.kind for p in host.problems if p.name == "quiet_ads"] == ["disabled"]
    assert "quiet_ads_plugin" not in sys.modules  # not even imported


def test_two_distributions_claiming_one_provider_id(site):
    site(
        "adconnect-twin-a",
        "twin_ads",
        "twin_a_plugin",
        _provider("twin_ads"),
        target=f"twin_a_plugin:{_cls('twin_ads')}",
    )
    site(
        "adconnect-twin-b",
        "twin_ads",
        "twin_b_plugin",
        _provider("twin_ads"),
        target=f"twin_b_plugin:{_cls('twin_ads')}",
    )
    host = load_plugins()
    assert "twin_ads" in host.provider_ids()
    assert [p.kind for p in host.problems if p.name == "twin_ads"] == ["duplicate"]


@pytest.mark.parametrize(
    ("declared", "ok"),
    [("1.0", True), ("1.0.7", True), ("0.9", False), ("2.0", False), ("1.1", False), ("one", False)],
)
def test_contract_compatibility_rule(declared, ok):
    assert contract_compatible(declared, "1.0") is ok
    assert contract_compatible("1.0", "1.3") is True
