"""ClientStore over a real database: save, get, list, enable and disable, replace the secret."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest

from app import Services, build_services, create_app
from config import normalize_database_url
from services.api_clients import ClientStore, validate_patterns
from services.database import Database
from services.errors import InvalidRequest, Unauthenticated
from tests.conftest import TEST_CLIENT_ID, TEST_CLIENT_SECRET, SettingsFactory


@pytest.fixture
def store(database_url: str) -> Iterator[ClientStore]:
    database = Database(normalize_database_url(database_url), 2)
    yield ClientStore(database)
    database.close()


async def test_save_creates_a_client_that_get_returns(store: ClientStore):
    created = await store.save("bot-one", "hash-1", ("waddlebot-a*", "waddlebot-b?"), "the first bot")
    assert created is True
    client = await store.get("bot-one")
    assert client is not None
    assert client.client_id == "bot-one"
    assert client.secret_hash == "hash-1"
    assert client.active is True
    assert client.allowed_patterns == ("waddlebot-a*", "waddlebot-b?")
    assert client.description == "the first bot"
    assert client.created_at is not None


async def test_get_of_an_unknown_client_is_none(store: ClientStore):
    assert await store.get("nobody-here") is None


async def test_saving_again_replaces_secret_patterns_description_and_re_enables(store: ClientStore):
    await store.save("bot-one", "hash-1", ("waddlebot-a*",), "old")
    first = await store.get("bot-one")
    await store.set_active("bot-one", False)

    created = await store.save("bot-one", "hash-2")

    assert created is False
    client = await store.get("bot-one")
    assert client.secret_hash == "hash-2"
    assert client.allowed_patterns == ()
    assert client.description == ""
    assert client.active is True
    assert client.created_at == first.created_at
    assert len(await store.list()) == 1


async def test_list_returns_every_client_in_id_order(store: ClientStore):
    assert await store.list() == []
    for client_id in ("charlie", "alpha", "bravo"):
        await store.save(client_id, f"hash-{client_id}")
    clients = await store.list()
    assert [client.client_id for client in clients] == ["alpha", "bravo", "charlie"]
    assert [client.secret_hash for client in clients] == ["hash-alpha", "hash-bravo", "hash-charlie"]


async def test_set_active_disables_and_enables(store: ClientStore):
    await store.save("bot-one", "hash-1")
    assert await store.set_active("bot-one", False) is True
    assert (await store.get("bot-one")).active is False
    assert [client.active for client in await store.list()] == [False]
    assert await store.set_active("bot-one", True) is True
    assert (await store.get("bot-one")).active is True


async def test_set_secret_hash_replaces_only_the_secret(store: ClientStore):
    await store.save("bot-one", "hash-1", ("waddlebot-*",), "kept")
    assert await store.set_secret_hash("bot-one", "hash-2") is True
    client = await store.get("bot-one")
    assert client.secret_hash == "hash-2"
    assert client.allowed_patterns == ("waddlebot-*",)
    assert client.description == "kept"


async def test_changes_to_an_unknown_client_report_false(store: ClientStore):
    assert await store.set_active("nobody-here", False) is False
    assert await store.set_secret_hash("nobody-here", "hash") is False
    assert await store.list() == []


@pytest.mark.parametrize("client_id", ["ab", "has space", "semi;colon", "x" * 129, "", "bot-one\n", "bot\x00one"])
async def test_badly_formed_client_ids_are_refused(store: ClientStore, client_id):
    with pytest.raises(InvalidRequest):
        await store.save(client_id, "hash")
    assert await store.list() == []


@pytest.mark.parametrize("pattern", ["", "a,b", "name with space", "../x", "x" * 129])
async def test_badly_formed_patterns_are_refused(store: ClientStore, pattern):
    with pytest.raises(InvalidRequest):
        await store.save("bot-one", "hash", (pattern,))
    assert await store.get("bot-one") is None


def test_well_formed_patterns_are_accepted():
    assert validate_patterns(["waddlebot-*", "fn_[ab]?", "[!x]*"]) == ("waddlebot-*", "fn_[ab]?", "[!x]*")


async def test_without_a_key_a_development_client_is_printed_not_logged(
    make_settings: SettingsFactory, aws, capsys, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(MODULE_SECRET_KEY="", BOOTSTRAP_CLIENT_ID="", BOOTSTRAP_CLIENT_SECRET="")
    assert settings.secret_key_generated
    module = await build_services(settings)
    try:
        out = capsys.readouterr().out
        match = re.search(r"client_id=local-dev client_secret=(\S+)", out)
        assert match, out
        secret = match.group(1)
        assert "MODULE_SECRET_KEY" in out
        assert secret not in caplog.text
        assert await _issue_status(module, "local-dev", secret) == 200
        assert await _issue_status(module, TEST_CLIENT_ID, TEST_CLIENT_SECRET) == 401
    finally:
        await module.close()


async def test_a_restart_with_a_new_bootstrap_secret_replaces_the_old_one(
    make_settings: SettingsFactory, database_url: str, aws
):
    first = await build_services(make_settings(DATABASE_URL=database_url))
    try:
        assert await _issue_status(first, TEST_CLIENT_ID, TEST_CLIENT_SECRET) == 200
        await first.clients.set_active(TEST_CLIENT_ID, False)
    finally:
        await first.close()
    new_secret = "a-replaced-bootstrap-secret-42"
    second = await build_services(make_settings(DATABASE_URL=database_url, BOOTSTRAP_CLIENT_SECRET=new_secret))
    try:
        assert await _issue_status(second, TEST_CLIENT_ID, TEST_CLIENT_SECRET) == 401
        assert await _issue_status(second, TEST_CLIENT_ID, new_secret) == 200
        assert [client.client_id for client in await second.clients.list()] == [TEST_CLIENT_ID]
    finally:
        await second.close()


async def test_a_configured_key_disables_a_development_client_left_in_the_database(
    make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
):
    development = await build_services(make_settings(MODULE_SECRET_KEY=""), lambda_client=object())
    await development.close()
    secret = re.search(r"client_secret=(\S+)", capsys.readouterr().out).group(1)

    module = await build_services(make_settings(), lambda_client=object())
    try:
        left = await module.clients.get("local-dev")
        assert left is not None
        assert left.active is False
        with pytest.raises(Unauthenticated):
            await module.authenticator.issue_token("local-dev", secret, "127.0.0.1")
    finally:
        await module.close()


async def _issue_status(module: Services, client_id: str, secret: str) -> int:
    """The status POST /api/v1/token answers for these credentials, through the real app."""
    app = create_app(module)
    async with app.test_app() as test_app:
        response = await test_app.test_client().post(
            "/api/v1/token", json={"client_id": client_id, "client_secret": secret}
        )
        return response.status_code


async def test_two_processes_saving_the_same_client_at_once_both_succeed(database_url: str):
    # As two replicas starting together with one bootstrap client do: separate connections, the same id.
    first, second = (Database(normalize_database_url(database_url), 1) for _ in range(2))
    try:
        stores = (ClientStore(first), ClientStore(second))
        for round_number in range(20):
            client_id = f"bootstrap-{round_number}"
            created = await asyncio.gather(*(store.save(client_id, "scrypt$hash") for store in stores))
            assert sorted(created) == [False, True]
        listed = [client.client_id for client in await stores[0].list()]
        assert sorted(listed) == sorted(f"bootstrap-{number}" for number in range(20))
    finally:
        first.close()
        second.close()
