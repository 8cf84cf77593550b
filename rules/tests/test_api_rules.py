"""`/api/v1/rules`: CRUD through the services, DSL errors with their position, versions, dry runs,
validation, roles and the tenant wall."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Tenant, User
from rules.models import Rule, RuleMatch
from tests.support.rows import row

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]

BIG_ORDERS = 'when type == "order" and amount > 500 then notify("slack:#big-orders", "order {event.id}: {amount}")'


def create_rule(client: APIClient, **overrides: Any) -> dict[str, Any]:
    body = {"name": "big orders", "dsl": BIG_ORDERS, **overrides}
    response = client.post("/api/v1/rules", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_an_admin_creates_a_rule(api: Api, alice: User, tenant_a: Tenant) -> None:
    created = create_rule(api(alice), cooldown_seconds=60, enabled=False)

    assert created["version"] == 1
    assert created["cooldown_seconds"] == 60
    assert created["enabled"] is False
    assert created["tenant"] == tenant_a.pk
    assert {"created_at", "updated_at"} <= set(created)
    assert Rule.objects.get(pk=created["id"]).dsl == BIG_ORDERS


def test_the_defaults_are_enabled_with_a_five_minute_cooldown(api: Api, alice: User) -> None:
    created = create_rule(api(alice))

    assert (created["enabled"], created["cooldown_seconds"]) == (True, 300)


def test_a_syntax_error_is_a_400_with_its_position(api: Api, alice: User) -> None:
    dsl = 'when type == "order"\n  and amount > then notify("slack:#x")'

    response = api(alice).post("/api/v1/rules", {"name": "broken", "dsl": dsl}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("Syntax error")
    position = error["details"]["dsl"]
    assert (position["line"], position["column"]) == (2, 16)
    assert "number" in position["expected"]
    assert not Rule.objects.exists()


def test_a_semantic_error_is_a_400_with_its_position(api: Api, alice: User) -> None:
    response = api(alice).post(
        "/api/v1/rules", {"name": "nested", "dsl": 'when sum(count(1m), 1h) > 1 then notify("slack:#x")'}, format="json"
    )

    assert response.status_code == 400
    assert {"line", "column"} <= set(response.json()["error"]["details"]["dsl"])
    assert not Rule.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"dsl": ""}, "dsl"),
        ({"cooldown_seconds": -1}, "cooldown_seconds"),
        ({"cooldown_seconds": 2**31}, "cooldown_seconds"),
        ({"enabled": "maybe"}, "enabled"),
    ],
)
def test_invalid_fields_are_a_json_400(api: Api, alice: User, overrides: dict[str, Any], field: str) -> None:
    response = api(alice).post("/api/v1/rules", {"name": "r", "dsl": BIG_ORDERS, **overrides}, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not Rule.objects.exists()


def test_a_taken_name_is_a_409(api: Api, alice: User, mallory: User) -> None:
    taken = create_rule(api(alice))
    create_rule(api(mallory))  # names are unique per tenant only
    before = row(Rule.objects.get(pk=taken["id"]))

    response = api(alice).post(
        "/api/v1/rules", {"name": "big orders", "dsl": 'when true then notify("slack:#x")'}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert Rule.objects.count() == 2
    assert row(Rule.objects.get(pk=taken["id"])) == before  # its DSL and version were not replaced


def test_renaming_onto_a_taken_name_is_a_409(api: Api, alice: User) -> None:
    create_rule(api(alice))
    other = create_rule(api(alice), name="other")
    before = row(Rule.objects.get(pk=other["id"]))

    response = api(alice).patch(f"/api/v1/rules/{other['id']}", {"name": "big orders"}, format="json")

    assert response.status_code == 409
    assert Rule.objects.get(pk=other["id"]).name == "other"
    assert row(Rule.objects.get(pk=other["id"])) == before


class TestVersions:
    def test_changing_the_dsl_bumps_the_version(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))
        url = f"/api/v1/rules/{created['id']}"

        changed = api(alice).patch(url, {"dsl": BIG_ORDERS.replace("500", "1000")}, format="json").json()

        assert changed["version"] == 2
        assert "1000" in changed["dsl"]

    def test_other_changes_and_the_same_dsl_keep_it(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))
        url = f"/api/v1/rules/{created['id']}"

        api(alice).patch(url, {"name": "renamed", "enabled": False, "cooldown_seconds": 0}, format="json")
        response = api(alice).put(url, {"name": "renamed", "dsl": BIG_ORDERS}, format="json")

        assert response.status_code == 200
        assert response.json()["version"] == 1
        assert Rule.objects.get(pk=created["id"]).name == "renamed"

    def test_the_version_cannot_be_set(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))

        response = api(alice).patch(f"/api/v1/rules/{created['id']}", {"version": 42}, format="json")

        assert response.json()["version"] == 1

    def test_an_invalid_dsl_leaves_the_rule_as_it_was(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))

        response = api(alice).patch(f"/api/v1/rules/{created['id']}", {"dsl": "when then"}, format="json")

        assert response.status_code == 400
        assert response.json()["error"]["details"]["dsl"]["column"] == 6
        rule = Rule.objects.get(pk=created["id"])
        assert (rule.dsl, rule.version) == (BIG_ORDERS, 1)


class TestDryRun:
    def test_a_matching_event_shows_the_rendered_actions(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))

        response = api(alice).post(
            f"/api/v1/rules/{created['id']}/dry-run",
            {"event": {"type": "order", "id": 7, "amount": 900}},
            format="json",
        )

        assert response.status_code == 200, response.content
        assert response.json() == {
            "matched": True,
            "actions": [{"kind": "slack", "target": "#big-orders", "message": "order 7: 900"}],
            "group": None,
        }

    def test_an_event_that_does_not_match(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))

        response = api(alice).post(
            f"/api/v1/rules/{created['id']}/dry-run", {"event": {"type": "order", "amount": 10}}, format="json"
        )

        assert response.json() == {"matched": False, "actions": [], "group": None}

    def test_windows_see_only_the_sample_and_nothing_is_recorded(self, api: Api, alice: User) -> None:
        dsl = 'when type == "login_failed" and count(5m by ip) >= 1 then notify("webhook:sec")'
        once = create_rule(api(alice), name="first", dsl=dsl)
        twice = create_rule(api(alice), name="twice", dsl=dsl.replace(">= 1", ">= 2"))
        event = {"event": {"type": "login_failed", "ip": "10.0.0.1"}}

        for _ in range(3):
            first = api(alice).post(f"/api/v1/rules/{once['id']}/dry-run", event, format="json").json()
            second = api(alice).post(f"/api/v1/rules/{twice['id']}/dry-run", event, format="json").json()

            assert first["matched"] is True
            assert first["group"] == "ip=10.0.0.1"
            assert second["matched"] is False  # earlier dry runs were not counted
        assert not RuleMatch.objects.exists()

    @pytest.mark.parametrize("body", [{}, {"event": [1]}, {"event": "order"}, {"event": {"type": 1}}, [1]])
    def test_a_bad_sample_is_a_400(self, api: Api, alice: User, body: object) -> None:
        created = create_rule(api(alice))
        before = row(Rule.objects.get(pk=created["id"]))

        response = api(alice).post(f"/api/v1/rules/{created['id']}/dry-run", body, format="json")

        assert response.status_code == 400
        assert "error" in response.json()
        assert row(Rule.objects.get(pk=created["id"])) == before
        assert not RuleMatch.objects.exists()


class TestValidate:
    def test_a_valid_dsl_says_what_it_listens_to_and_does(self, api: Api, bob: User) -> None:
        response = api(bob).post("/api/v1/rules/validate", {"dsl": BIG_ORDERS}, format="json")

        assert response.status_code == 200
        body = response.json()
        assert body["valid"] is True
        assert body["event_types"] == ["order"]
        assert body["actions"] == [{"kind": "slack", "target": "#big-orders", "template": "order {event.id}: {amount}"}]

    def test_a_rule_for_any_type_has_no_event_types(self, api: Api, alice: User) -> None:
        response = api(alice).post(
            "/api/v1/rules/validate", {"dsl": 'when amount > 1 then notify("email:a@b.c")'}, format="json"
        )

        assert response.json()["event_types"] is None

    def test_an_invalid_dsl_is_a_400_with_its_position(self, api: Api, alice: User) -> None:
        response = api(alice).post("/api/v1/rules/validate", {"dsl": 'when type == "x" then'}, format="json")

        assert response.status_code == 400
        position = response.json()["error"]["details"]["dsl"]
        assert position["line"] == 1
        assert position["column"] == 22
        assert position["expected"]

    def test_nothing_is_saved(self, api: Api, alice: User) -> None:
        api(alice).post("/api/v1/rules/validate", {"dsl": BIG_ORDERS}, format="json")

        assert not Rule.objects.exists()


class TestRoles:
    def test_members_read_rules_but_do_not_change_them(self, api: Api, alice: User, bob: User) -> None:
        created = create_rule(api(alice))
        url = f"/api/v1/rules/{created['id']}"
        before = row(Rule.objects.get(pk=created["id"]))

        assert api(bob).get("/api/v1/rules").json()["count"] == 1
        assert api(bob).get(url).status_code == 200
        assert api(bob).post("/api/v1/rules", {"name": "mine", "dsl": BIG_ORDERS}, format="json").status_code == 403
        assert api(bob).patch(url, {"enabled": False}, format="json").status_code == 403
        assert api(bob).delete(url).status_code == 403
        assert Rule.objects.get(pk=created["id"]).enabled is True
        assert list(Rule.objects.values_list("pk", flat=True)) == [created["id"]]
        assert row(Rule.objects.get(pk=created["id"])) == before

    def test_members_may_dry_run(self, api: Api, alice: User, bob: User) -> None:
        created = create_rule(api(alice))

        response = api(bob).post(f"/api/v1/rules/{created['id']}/dry-run", {"event": {}}, format="json")

        assert response.status_code == 200

    def test_admins_delete(self, api: Api, alice: User) -> None:
        created = create_rule(api(alice))

        assert api(alice).delete(f"/api/v1/rules/{created['id']}").status_code == 204
        assert not Rule.objects.exists()

    def test_api_keys_need_api_write_to_change_rules(self, api: Api, tenant_a: Tenant) -> None:
        _, reader = account_services.api_key_create(tenant=tenant_a, name="r", scopes=["api:read"])
        _, writer = account_services.api_key_create(tenant=tenant_a, name="w", scopes=["api:write"])
        _, sender = account_services.api_key_create(tenant=tenant_a, name="s", scopes=["events:write"])
        body = {"name": "by key", "dsl": BIG_ORDERS}

        assert api(api_key=sender).get("/api/v1/rules").status_code == 403
        assert api(api_key=reader).get("/api/v1/rules").status_code == 200
        assert api(api_key=reader).post("/api/v1/rules/validate", {"dsl": BIG_ORDERS}, format="json").status_code == 200
        assert api(api_key=reader).post("/api/v1/rules", body, format="json").status_code == 403
        assert api(api_key=sender).post("/api/v1/rules", body, format="json").status_code == 403
        assert not Rule.objects.exists()
        assert api(api_key=writer).post("/api/v1/rules", body, format="json").status_code == 201

    def test_staff_name_the_tenant(self, api: Api, staff: User, tenant_a: Tenant) -> None:
        missing = api(staff).post("/api/v1/rules", {"name": "r", "dsl": BIG_ORDERS}, format="json")
        named = api(staff).post(
            "/api/v1/rules", {"name": "r", "dsl": BIG_ORDERS, "tenant": "wonderland"}, format="json"
        )

        assert missing.status_code == 400
        assert "tenant" in missing.json()["error"]["details"]
        assert named.status_code == 201
        assert Rule.objects.get().tenant == tenant_a


class TestTenantWall:
    def test_mallory_neither_sees_nor_changes_alices_rules(self, api: Api, alice: User, mallory: User) -> None:
        created = create_rule(api(alice))
        create_rule(api(mallory), name="mallory's")
        url = f"/api/v1/rules/{created['id']}"
        before = row(Rule.objects.get(pk=created["id"]))

        listed = api(mallory).get("/api/v1/rules").json()
        assert [rule["name"] for rule in listed["results"]] == ["mallory's"]
        assert api(mallory).get(url).status_code == 404
        assert api(mallory).patch(url, {"enabled": False}, format="json").status_code == 404
        assert api(mallory).put(url, {"name": "x", "dsl": BIG_ORDERS}, format="json").status_code == 404
        assert api(mallory).delete(url).status_code == 404
        assert api(mallory).post(f"{url}/dry-run", {"event": {"type": "order"}}, format="json").status_code == 404
        rule = Rule.objects.get(pk=created["id"])
        assert (rule.name, rule.enabled) == ("big orders", True)
        assert row(rule) == before  # DSL, version and tenant too
        assert not RuleMatch.objects.exists()  # her dry run recorded nothing either

    def test_mallory_cannot_create_in_alices_tenant(self, api: Api, alice: User, mallory: User) -> None:
        response = api(mallory).post(
            "/api/v1/rules", {"name": "r", "dsl": BIG_ORDERS, "tenant": "wonderland"}, format="json"
        )

        assert response.status_code == 403
        assert not Rule.objects.exists()

    def test_a_rule_cannot_move_to_another_tenant(self, api: Api, alice: User, mallory: User) -> None:
        created = create_rule(api(alice))
        before = row(Rule.objects.get())

        response = api(alice).patch(f"/api/v1/rules/{created['id']}", {"tenant": "evil"}, format="json")

        assert response.status_code == 400
        assert Rule.objects.get().tenant.slug == "wonderland"
        assert row(Rule.objects.get()) == before
