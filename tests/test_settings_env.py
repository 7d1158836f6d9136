"""Settings.from_env: every bad value is reported together, each with the variable's
name and what is wrong, the payments part included; empty means the default."""

from __future__ import annotations

import pytest

from inventory.ops.config import ConfigError, RateLimit, Settings


def _problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env, for_api=False)
    return raised.value.problems


def test_bad_values_are_reported_together_with_their_names() -> None:
    """One ConfigError lists every unparsable value, in the settings' order."""
    assert _problems(
        {
            "INVENTORY_REDIS_CLUSTER": "maybe",
            "INVENTORY_REDIS_MAX_CONNECTIONS": "0",
            "INVENTORY_REDIS_POOL_TIMEOUT_S": "-1",
            "INVENTORY_PORT": "http",
            "INVENTORY_RESERVE_RATE_PER_IP": "5/0",
            "INVENTORY_WORKER_METRICS_PORT": "70000",
            "INVENTORY_PAYMENT_NOTIFY_WINDOW_S": "0",
            "INVENTORY_PAYMENT_LOOP_INTERVAL_S": "0",
            "INVENTORY_PAYMENT_CLOSE_GRACE_S": "soon",
            "INVENTORY_PAYMENT_LOOPS": "sometimes",
        }
    ) == [
        "INVENTORY_REDIS_CLUSTER: expected true or false, got 'maybe'",
        "INVENTORY_REDIS_MAX_CONNECTIONS: must be a positive integer",
        "INVENTORY_REDIS_POOL_TIMEOUT_S: must be a positive number",
        "INVENTORY_PORT: invalid literal for int() with base 10: 'http'",
        "INVENTORY_RESERVE_RATE_PER_IP: expected COUNT/SECONDS with COUNT >= 0 and SECONDS > 0",
        "INVENTORY_WORKER_METRICS_PORT: must be a port number, or 0 for none",
        "INVENTORY_PAYMENT_NOTIFY_WINDOW_S: must be 1-3600 seconds",
        "INVENTORY_PAYMENT_LOOP_INTERVAL_S: must be a positive number",
        "INVENTORY_PAYMENT_CLOSE_GRACE_S: could not convert string to float: 'soon'",
        "INVENTORY_PAYMENT_LOOPS: expected true or false, got 'sometimes'",
    ]


def test_values_are_read_and_empty_means_the_default() -> None:
    """Given values parse (booleans in any of their spellings); an empty one keeps the
    default, in the payments part too."""
    settings = Settings.from_env(
        {
            "INVENTORY_REDIS_CLUSTER": "",
            "INVENTORY_REDIS_AUTOPIPELINE": " Off ",
            "INVENTORY_REDIS_MAX_CONNECTIONS": "12",
            "INVENTORY_WORKER_METRICS_PORT": "0",
            "INVENTORY_RESERVE_RATE_PER_ACCOUNT": "3/10",
            "INVENTORY_WECHAT_MCHID": "",
            "INVENTORY_PAYMENT_NOTIFY_WINDOW_S": "3600",
            "INVENTORY_PAYMENT_CLOSE_GRACE_S": "2.5",
            "INVENTORY_PAYMENT_LOOPS": "no",
        },
        for_api=False,
    )
    assert (settings.redis_cluster, settings.redis_autopipeline) == (False, False)
    assert settings.redis_max_connections == 12
    assert settings.worker_metrics_port == 0
    assert settings.reserve_rate_per_account == RateLimit(3, 10.0)
    payments = settings.payments
    assert (payments.enabled, payments.notify_window_s) == (False, 3600)
    assert (payments.close_grace_s, payments.loop_interval_s, payments.run_loops) == (
        2.5,
        1.0,
        False,
    )


def test_login_settings_are_read_and_checked_together() -> None:
    """The login part: bad values named with the rest, each method off until
    configured, and what a configured method lacks reported by name."""
    assert _problems(
        {
            "INVENTORY_SMS_CODE_KEY": "c1:c2hvcnQ=",
            "INVENTORY_SMS_RESEND_S": "-1",
            "INVENTORY_SMS_RATE_PER_PHONE": "five",
            "INVENTORY_ACCESS_TOKEN_TTL_S": "0",
        }
    ) == [
        "INVENTORY_SMS_CODE_KEY: key 'c1' must be at least 32 bytes",
        "INVENTORY_ACCESS_TOKEN_TTL_S: must be a positive integer",
        "INVENTORY_SMS_RESEND_S: must be 0 or a positive integer",
        "INVENTORY_SMS_RATE_PER_PHONE: invalid literal for int() with base 10: 'five'",
    ]
    off = Settings.from_env({}, for_api=False).login
    assert not off.wechat_enabled
    assert not off.sms_enabled
    assert off.problems() == []
    on = Settings.from_env(
        {
            "INVENTORY_WECHAT_APP_SECRET": "s3cret",
            "INVENTORY_WECHAT_LOGIN_URL": "ftp://example",
            "INVENTORY_SMS_URL": "http://127.0.0.1:9",
            "INVENTORY_REFRESH_TOKEN_TTL_S": "100",
            "INVENTORY_LOGIN_SESSION_MAX_S": "50",
        },
        for_api=False,
    ).login
    assert on.wechat_enabled
    assert on.sms_enabled
    assert "s3cret" not in repr(on)
    assert on.problems() == [
        "INVENTORY_WECHAT_APPID: required with WECHAT_APP_SECRET",
        "INVENTORY_WECHAT_LOGIN_URL: must be an http(s) URL",
        "INVENTORY_SMS_CODE_KEY: an id:base64 key of at least 32 bytes is required",
        "INVENTORY_REFRESH_TOKEN_TTL_S: must not exceed LOGIN_SESSION_MAX_S",
    ]
