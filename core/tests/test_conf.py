"""core.conf: Sentinel's tunables read through one typed object."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from core.conf import sentinel_settings


def test_each_section_holds_its_settings_dict() -> None:
    from django.conf import settings

    assert asdict(sentinel_settings.accounts) == settings.SENTINEL_ACCOUNTS
    assert asdict(sentinel_settings.gateway) == settings.SENTINEL_GATEWAY
    assert asdict(sentinel_settings.rules) == settings.SENTINEL_RULES
    assert asdict(sentinel_settings.monitors) == settings.SENTINEL_MONITORS


def test_a_replaced_dict_is_read_again_and_the_old_one_comes_back_after(settings: Any) -> None:
    before = sentinel_settings.rules.DELIVERY_MAX_ATTEMPTS

    with override_settings(SENTINEL_RULES={**settings.SENTINEL_RULES, "DELIVERY_MAX_ATTEMPTS": before + 1}):
        during = sentinel_settings.rules.DELIVERY_MAX_ATTEMPTS
    after = sentinel_settings.rules.DELIVERY_MAX_ATTEMPTS

    assert (during, after) == (before + 1, before)

    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "TENANT_HEADER": "x-org"}
    assert sentinel_settings.gateway.TENANT_HEADER == "x-org"


@pytest.mark.parametrize("change", ["unknown", "missing"])
def test_a_dict_of_the_wrong_shape_is_refused_naming_it(settings: Any, change: str) -> None:
    accounts = dict(settings.SENTINEL_ACCOUNTS)
    if change == "unknown":
        accounts["LOGIN_FAILURES_PER_USRENAME"] = 3
    else:
        del accounts["API_KEY_TOUCH_SECONDS"]
    settings.SENTINEL_ACCOUNTS = accounts

    with pytest.raises(ImproperlyConfigured, match="SENTINEL_ACCOUNTS"):
        sentinel_settings.accounts  # noqa: B018 - the read is what is tested
