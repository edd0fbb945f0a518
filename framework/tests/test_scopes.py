"""Scope expressions (the Meta gate and friends) and scope sanitising."""

from __future__ import annotations

import pytest

from adconnect.scopes import ScopeRequirement, sanitize_scopes

META_GATE = (
    "(ads_read OR ads_management) AND business_management AND pages_read_engagement AND pages_show_list"
)
PAGES = {"business_management", "pages_read_engagement", "pages_show_list"}


@pytest.fixture(scope="module")
def gate() -> ScopeRequirement:
    return ScopeRequirement.parse(META_GATE)


@pytest.mark.parametrize(
    ("granted", "missing"),
    [
        ({"ads_read", *PAGES}, ()),
        ({"ads_management", *PAGES}, ()),
        ({"ads_read", "ads_management", *PAGES}, ()),
        (PAGES, ("ads_read OR ads_management",)),
        ({"ads_read", "pages_show_list"}, ("business_management", "pages_read_engagement")),
        (
            set(),
            ("ads_read OR ads_management", "business_management", "pages_read_engagement", "pages_show_list"),
        ),
        ({"ADS_MANAGEMENT ", " Business_Management", "pages_read_engagement", "pages_show_list"}, ()),
        (
            {"ads_read", "business_management", "pages_read_engagement", "pages_manage_posts"},
            ("pages_show_list",),
        ),
    ],
)
def test_meta_gate_reports_exactly_the_missing_terms(gate, granted, missing):
    check = gate.check(granted)
    assert check.missing == missing
    assert check.satisfied is (not missing)


def test_the_gate_knows_its_scopes_and_renders_in_its_own_words(gate):
    assert gate.scopes() == {"ads_read", "ads_management", *PAGES}
    assert str(gate) == META_GATE


@pytest.mark.parametrize(
    "text",
    [
        "(ads_read or ads_management) and business_management",
        "(ADS_READ Or ads_management) AnD business_management",
        "((ads_read OR ads_management)) AND (business_management)",
    ],
)
def test_keywords_are_case_insensitive_and_redundant_parentheses_vanish(text):
    requirement = ScopeRequirement.parse(text)
    assert str(requirement) == "(ads_read OR ads_management) AND business_management"
    assert requirement == ScopeRequirement.parse("(ads_read OR ads_management) AND business_management")


def test_and_binds_tighter_than_or():
    requirement = ScopeRequirement.parse("a AND b OR c")
    assert requirement.check({"c"}).satisfied
    assert requirement.check({"a", "b"}).satisfied
    assert requirement.check({"a"}).missing == ("(a AND b) OR c",)


def test_nested_parentheses_are_reported_as_written():
    requirement = ScopeRequirement.parse("x AND (a OR (b AND (c OR d)))")
    assert requirement.check({"x", "a"}).satisfied
    assert requirement.check({"x", "b", "d"}).satisfied
    assert requirement.check({"x", "b"}).missing == ("a OR (b AND (c OR d))",)
    assert requirement.check({"b", "c"}).missing == ("x",)


def test_flattening_same_operator_groups():
    assert str(ScopeRequirement.parse("(a AND b) AND (c AND d)")) == "a AND b AND c AND d"
    assert ScopeRequirement.parse("(a AND b) AND c").check({"c"}).missing == ("a", "b")


def test_google_style_scope_urls_parse():
    requirement = ScopeRequirement.parse("https://www.googleapis.com/auth/adwords")
    assert requirement.check({"https://www.googleapis.com/auth/adwords"}).satisfied


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty scope expression"),
        ("   ", "empty scope expression"),
        ("ads_read AND", "ends too early"),
        ("AND ads_read", "unexpected 'AND'"),
        ("ads_read OR OR pages", "unexpected 'OR'"),
        ("(ads_read OR pages", "missing '\\)'"),
        ("ads_read)", "unexpected '\\)'"),
        ("()", "unexpected '\\)'"),
        ("ads_read pages", "unexpected 'pages'"),
        ("ads_read & pages", "cannot parse"),
    ],
)
def test_parse_errors_are_clear_value_errors(text, message):
    with pytest.raises(ValueError, match=message) as caught:
        ScopeRequirement.parse(text)
    if text.strip():
        assert repr(text) in str(caught.value)


def test_all_of_and_and_():
    both = ScopeRequirement.all_of(["b", "a", "a"])
    assert str(both) == "a AND b"
    combined = ScopeRequirement.parse("x OR y").and_(ScopeRequirement.parse("z"))
    assert combined.check({"y"}).missing == ("z",)
    assert combined.check({"z"}).missing == ("x OR y",)
    with pytest.raises(ValueError, match="at least one"):
        ScopeRequirement.all_of([])


def test_a_plain_string_of_granted_scopes_is_refused(gate):
    with pytest.raises(TypeError, match="iterable of scope names"):
        gate.check("ads_read,business_management")


def test_sanitize_trims_lowercases_and_dedupes_keeping_order():
    kept, ignored = sanitize_scopes(
        [" Ads_Read", "business_management", "ads_read ", "", "  ", "PAGES_SHOW_LIST"]
    )
    assert kept == ("ads_read", "business_management", "pages_show_list")
    assert ignored == ()


def test_sanitize_strips_ignored_scopes_and_prefixes_case_insensitively():
    kept, ignored = sanitize_scopes(
        [
            "ads_read",
            "Read_Insights",
            "instagram_basic",
            "INSTAGRAM_manage_insights",
            "pages_show_list",
            "instagram_basic",
        ],
        ignore=["READ_INSIGHTS "],
        ignore_prefixes=["Instagram_"],
    )
    assert kept == ("ads_read", "pages_show_list")
    assert ignored == ("instagram_basic", "instagram_manage_insights", "read_insights")


def test_sanitize_keeps_everything_when_nothing_is_ignored():
    assert sanitize_scopes(["read_insights", "instagram_basic"]) == (("read_insights", "instagram_basic"), ())


def test_sanitize_refuses_a_plain_string():
    with pytest.raises(TypeError, match="iterable of scope names"):
        sanitize_scopes("ads_read")
