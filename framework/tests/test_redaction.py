"""The secret redactor: what it masks, how it stays bounded, and log-record redaction."""

from __future__ import annotations

import logging
import secrets
import threading
from urllib.parse import quote

import pytest

from adconnect.redaction import (
    SecretRegistry,
    install_log_redaction,
    redact,
    register_secret,
    uninstall_log_redaction,
)

LOGGER = "adconnect.tests.redaction"


def _secret() -> str:
    return "sk-" + secrets.token_urlsafe(24)


@pytest.fixture
def log_redaction():
    before = logging.getLogRecordFactory()
    install_log_redaction()
    yield
    uninstall_log_redaction()
    assert logging.getLogRecordFactory() is before


def test_every_occurrence_is_masked():
    value = _secret()
    register_secret(value)
    assert redact(f"a {value} b {value}") == "a *** b ***"
    assert redact("nothing secret here") == "nothing secret here"
    assert redact("") == ""


def test_values_shorter_than_six_characters_are_ignored():
    registry = SecretRegistry()
    registry.register("abc12")
    registry.register("")
    assert len(registry) == 0
    assert registry.redact("x abc12 y") == "x abc12 y"
    registry.register("abc123")
    assert registry.redact("x abc123 y") == "x *** y"


def test_a_secret_containing_another_is_masked_whole():
    registry = SecretRegistry()
    registry.register("abcdef")
    registry.register("abcdef-ghijkl")
    assert registry.redact("x abcdef-ghijkl y abcdef") == "x *** y ***"


def test_overlapping_and_adjacent_secrets_are_masked_as_one_span():
    registry = SecretRegistry()
    registry.register("xabcdef")
    registry.register("abcdefghij")
    assert registry.redact("xxabcdefghij!") == "x***!"
    assert registry.redact("xabcdefabcdefghij") == "***"


def test_regex_characters_are_literal_and_url_encoded_forms_are_masked():
    registry = SecretRegistry()
    registry.register("a.b*c(d)+/=")
    assert registry.redact("a.b*c(d)+/=") == "***"
    assert registry.redact("aXbbbc(d)") == "aXbbbc(d)"
    assert registry.redact(f"?access_token={quote('a.b*c(d)+/=', safe='')}") == "?access_token=***"


def test_the_registry_is_bounded_and_forgets_the_oldest_first():
    registry = SecretRegistry(max_size=3)
    for n in range(1, 5):
        registry.register(f"secret-{n}")
    assert len(registry) == 3
    assert "secret-1" not in registry
    assert registry.redact("secret-1 secret-4") == "secret-1 ***"

    refreshed = SecretRegistry(max_size=2)
    refreshed.register("alpha-1")
    refreshed.register("bravo-2")
    refreshed.register("alpha-1")  # registering again makes it the newest
    refreshed.register("charlie-3")
    assert "alpha-1" in refreshed
    assert "bravo-2" not in refreshed
    with pytest.raises(ValueError, match="max_size"):
        SecretRegistry(max_size=0)


def test_registering_and_redacting_from_many_threads():
    registry = SecretRegistry()
    errors: list[BaseException] = []
    values = [[f"thread{t}-secret-{n:04d}" for n in range(200)] for t in range(6)]

    def work(mine: list[str]) -> None:
        try:
            for value in mine:
                registry.register(value)
                assert registry.redact(f"<{value}>") == "<***>"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(registry) == 1200


def test_log_messages_are_redacted_once_installed(log_redaction, caplog):
    value = _secret()
    register_secret(value)
    log = logging.getLogger(LOGGER)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        log.info("token is %s", value)
        log.info(f"inline {value}")
        log.info("mapping %(token)s", {"token": value})
    assert value not in caplog.text
    assert [r.getMessage() for r in caplog.records] == ["token is ***", "inline ***", "mapping ***"]
    assert all(r.args is None for r in caplog.records)


def test_tracebacks_are_redacted(log_redaction, caplog):
    value = _secret()
    register_secret(value)
    log = logging.getLogger(LOGGER)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        try:
            raise RuntimeError(f"provider answered {value}")
        except RuntimeError:
            log.exception("call failed")
        log.info("where am I", stack_info=True)
    assert value not in caplog.text
    assert "RuntimeError: provider answered ***" in caplog.text
    assert value not in logging.Formatter().format(caplog.records[0])


def test_unformattable_arguments_do_not_break_logging(log_redaction, caplog):
    value = _secret()
    register_secret(value)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        logging.getLogger(LOGGER).info("%d items", f"not a number {value}")
    assert value not in caplog.text
    assert "***" in caplog.records[0].getMessage()


def test_installation_is_idempotent(log_redaction):
    factory = logging.getLogRecordFactory()
    install_log_redaction()
    install_log_redaction()
    assert logging.getLogRecordFactory() is factory
