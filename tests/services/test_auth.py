"""Tokens: issuing them to clients, and turning bearer tokens into callers, over a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import jwt
import pytest

from config import Settings
from services.api_clients import ClientStore
from services.auth import Authenticator, FailureWindow
from services.client_secrets import hash_secret
from services.database import Database
from services.domain import Caller
from services.errors import DatabaseUnavailable, TooManyFailedAttempts, Unauthenticated
from tests.conftest import TEST_SECRET_KEY, SettingsFactory

SECRET = "a-client-secret-of-some-length"
EXPIRATION = 120


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url, JWT_EXPIRATION_SECONDS=str(EXPIRATION))


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    opened = Database(settings.database_url, 2)
    yield opened
    opened.close()


@pytest.fixture
def store(database: Database) -> ClientStore:
    return ClientStore(database)


@pytest.fixture
async def authenticator(settings: Settings, store: ClientStore) -> Authenticator:
    await store.save("bot-client", hash_secret(SECRET), ("waddlebot-a*",))
    return Authenticator(settings, store)


def _encode(claims: dict, key: str = TEST_SECRET_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm)


def _fresh_claims(**claims) -> dict:
    now = int(time.time())
    return {"iat": now, "exp": now + 60, **claims}


async def test_issued_token_names_the_client_and_expires_after_the_configured_time(authenticator: Authenticator):
    before = int(time.time())
    issued = await authenticator.issue_token("bot-client", SECRET, "127.0.0.1")
    after = int(time.time())
    assert issued.expires_in == EXPIRATION
    assert issued.token_type == "Bearer"
    claims = jwt.decode(issued.token, TEST_SECRET_KEY, algorithms=["HS256"])
    assert claims["sub"] == "bot-client"
    assert before <= claims["iat"] <= after
    assert claims["exp"] == claims["iat"] + EXPIRATION
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


async def test_an_issued_token_authenticates_as_the_client_with_its_patterns(authenticator: Authenticator):
    issued = await authenticator.issue_token("bot-client", SECRET, "127.0.0.1")
    caller = await authenticator.authenticate(issued.token, "127.0.0.1")
    assert caller == Caller(kind="client", name="bot-client", allowed_patterns=("waddlebot-a*",))


async def test_wrong_secret_and_unknown_client_are_refused_alike(authenticator: Authenticator):
    with pytest.raises(Unauthenticated) as wrong_secret:
        await authenticator.issue_token("bot-client", SECRET + "x", "127.0.0.1")
    with pytest.raises(Unauthenticated) as unknown_client:
        await authenticator.issue_token("nobody-here", SECRET, "127.0.0.1")
    assert wrong_secret.value.message == unknown_client.value.message
    assert "bot-client" not in wrong_secret.value.message


async def test_a_disabled_client_gets_no_token(authenticator: Authenticator, store: ClientStore):
    await store.set_active("bot-client", False)
    with pytest.raises(Unauthenticated) as disabled:
        await authenticator.issue_token("bot-client", SECRET, "127.0.0.1")
    with pytest.raises(Unauthenticated) as unknown:
        await authenticator.issue_token("nobody-here", SECRET, "127.0.0.1")
    assert disabled.value.message == unknown.value.message


async def test_a_disabled_clients_existing_token_is_refused(
    authenticator: Authenticator, store: ClientStore, settings: Settings
):
    issued = await authenticator.issue_token("bot-client", SECRET, "127.0.0.1")
    await store.set_active("bot-client", False)
    # A fresh authenticator, as after the client cache's lifetime, asks the database again.
    with pytest.raises(Unauthenticated):
        await Authenticator(settings, store).authenticate(issued.token, "127.0.0.1")
    await store.set_active("bot-client", True)
    caller = await Authenticator(settings, store).authenticate(issued.token, "127.0.0.1")
    assert caller.name == "bot-client"


async def test_a_token_for_a_client_that_does_not_exist_is_refused(authenticator: Authenticator):
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(_encode(_fresh_claims(sub="nobody-here")), "127.0.0.1")


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c"])
async def test_missing_or_garbage_tokens_are_refused(authenticator: Authenticator, token):
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(token, "127.0.0.1")


async def test_a_token_signed_with_another_key_is_refused(authenticator: Authenticator):
    token = _encode(_fresh_claims(sub="bot-client"), key="another-key-" + "x" * 64)
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(token, "127.0.0.1")


async def test_an_unsigned_token_is_refused(authenticator: Authenticator):
    token = jwt.encode(_fresh_claims(sub="bot-client"), None, algorithm="none")
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(token, "127.0.0.1")


async def test_a_token_signed_with_hs512_is_refused(authenticator: Authenticator):
    token = _encode(_fresh_claims(sub="bot-client"), algorithm="HS512")
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(token, "127.0.0.1")


async def test_an_expired_token_is_refused(authenticator: Authenticator):
    now = int(time.time())
    token = _encode({"sub": "bot-client", "iat": now - 3600, "exp": now - 60})
    with pytest.raises(Unauthenticated, match="expired"):
        await authenticator.authenticate(token, "127.0.0.1")


async def test_a_token_without_exp_or_iat_is_refused(authenticator: Authenticator):
    now = int(time.time())
    with pytest.raises(Unauthenticated, match="must carry the 'exp' claim"):
        await authenticator.authenticate(_encode({"sub": "bot-client", "iat": now}), "127.0.0.1")
    with pytest.raises(Unauthenticated, match="must carry the 'iat' claim"):
        await authenticator.authenticate(_encode({"sub": "bot-client", "exp": now + 60}), "127.0.0.1")


async def test_an_allowed_service_token_authenticates_as_the_service(authenticator: Authenticator):
    caller = await authenticator.authenticate(_encode(_fresh_claims(service="router_module")), "10.0.0.5")
    assert caller == Caller(kind="service", name="router_module")


@pytest.mark.parametrize("service", ["other", "", 42, ["router_module"]])
async def test_other_service_tokens_are_refused(authenticator: Authenticator, service):
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(_encode(_fresh_claims(service=service, sub="bot-client")), "10.0.0.5")


async def test_allowed_services_come_from_the_settings(make_settings: SettingsFactory, store: ClientStore):
    authenticator = Authenticator(make_settings(ALLOWED_SERVICES="scheduler"), store)
    caller = await authenticator.authenticate(_encode(_fresh_claims(service="scheduler")), "10.0.0.5")
    assert caller == Caller(kind="service", name="scheduler")
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(_encode(_fresh_claims(service="router_module")), "10.0.0.5")


async def test_a_verified_token_stops_working_when_it_expires(authenticator: Authenticator):
    claims = {"iat": int(time.time()), "exp": int(time.time()) + 1, "sub": "bot-client"}
    token = _encode(claims)
    assert (await authenticator.authenticate(token, "127.0.0.1")).name == "bot-client"

    # Trusted from memory on the second use, but never past its expiry.
    await asyncio.sleep(2.1)
    with pytest.raises(Unauthenticated, match="token expired"):
        await authenticator.authenticate(token, "127.0.0.1")


async def test_a_known_client_is_served_while_the_database_is_away_and_an_unknown_one_is_refused_clearly(
    settings: Settings, store: ClientStore, database: Database
):
    await store.save("bot-client", hash_secret(SECRET), ("waddlebot-a*",))
    authenticator = Authenticator(settings, store, client_fresh_seconds=0.05)
    token = _encode(_fresh_claims(sub="bot-client"))
    assert (await authenticator.authenticate(token, "127.0.0.1")).name == "bot-client"
    database.close()
    await asyncio.sleep(0.1)

    # Past its freshness, the entry is re-read in the background; the call does not wait for the database.
    caller = await authenticator.authenticate(token, "127.0.0.1")

    assert caller.name == "bot-client"
    stranger = _encode(_fresh_claims(sub="never-seen-client"))
    with pytest.raises(DatabaseUnavailable):
        await authenticator.authenticate(stranger, "127.0.0.1")


async def test_a_service_token_living_longer_than_the_cap_is_refused(authenticator: Authenticator):
    now = int(time.time())
    century = _encode({"service": "router_module", "iat": now, "exp": now + 100 * 365 * 24 * 3600})
    with pytest.raises(Unauthenticated, match="longer than the 86400 s this module accepts"):
        await authenticator.authenticate(century, "127.0.0.1")
    day = _encode({"service": "router_module", "iat": now, "exp": now + 86400})
    assert (await authenticator.authenticate(day, "127.0.0.1")).name == "router_module"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
async def test_a_signers_clock_ahead_by_the_leeway_is_allowed_and_more_is_not(authenticator: Authenticator, claim):
    now = int(time.time())
    within = {"service": "router_module", "iat": now, "exp": now + 600, claim: now + 20}
    assert (await authenticator.authenticate(_encode(within), "127.0.0.1")).kind == "service"
    beyond = {"service": "router_module", "iat": now, "exp": now + 600, claim: now + 120}
    with pytest.raises(Unauthenticated, match="in the future"):
        await authenticator.authenticate(_encode(beyond), "127.0.0.1")


async def test_a_token_whose_iat_is_not_a_number_is_refused(authenticator: Authenticator):
    now = int(time.time())
    with pytest.raises(Unauthenticated, match="invalid token"):
        await authenticator.authenticate(_encode({"sub": "bot-client", "iat": "now", "exp": now + 60}), "127.0.0.1")


def test_a_failure_window_refuses_past_its_limit_until_the_oldest_failure_ages_out():
    now = [1000.0]
    window = FailureWindow(3, 60, clock=lambda: now[0])
    for _ in range(2):
        window.add("bot")
        assert window.retry_after("bot") is None
    window.add("bot")
    assert window.retry_after("bot") == pytest.approx(60)
    assert window.retry_after("someone-else") is None
    now[0] += 59.5
    assert window.retry_after("bot") == pytest.approx(0.5)
    now[0] += 1
    assert window.retry_after("bot") is None


async def test_wrong_secrets_past_the_limit_are_refused_without_checking_the_secret(
    make_settings: SettingsFactory, store: ClientStore, monkeypatch: pytest.MonkeyPatch
):
    settings = make_settings(TOKEN_FAILURES_PER_CLIENT="3", TOKEN_FAILURES_PER_SOURCE="100")
    await store.save("bot-client", hash_secret(SECRET))
    authenticator = Authenticator(settings, store)
    try:
        for _ in range(3):
            with pytest.raises(Unauthenticated):
                await authenticator.issue_token("bot-client", "wrong", "10.0.0.1")

        checked = []
        monkeypatch.setattr("services.auth.verify_secret", lambda *arguments: checked.append(arguments) or True)
        # Even the right secret: the client id is locked out for the window, and no scrypt is spent on it.
        with pytest.raises(TooManyFailedAttempts, match="for this client_id") as refused:
            await authenticator.issue_token("bot-client", SECRET, "10.0.0.2")
        assert checked == []
        assert 0 < refused.value.retry_after <= 60
        # Another client is not held back by this one's failures.
        await store.save("other-client", hash_secret(SECRET))
        assert (await authenticator.issue_token("other-client", SECRET, "10.0.0.1")).token
    finally:
        authenticator.close()


async def test_wrong_secrets_from_one_address_past_its_limit_are_refused_whatever_the_client(
    make_settings: SettingsFactory, store: ClientStore
):
    settings = make_settings(TOKEN_FAILURES_PER_CLIENT="100", TOKEN_FAILURES_PER_SOURCE="3")
    await store.save("bot-client", hash_secret(SECRET))
    authenticator = Authenticator(settings, store)
    try:
        for number in range(3):
            with pytest.raises(Unauthenticated):
                await authenticator.issue_token(f"guess-{number}", "wrong", "10.0.0.9")
        with pytest.raises(TooManyFailedAttempts, match="from this address"):
            await authenticator.issue_token("bot-client", SECRET, "10.0.0.9")
        assert (await authenticator.issue_token("bot-client", SECRET, "10.0.0.10")).token
    finally:
        authenticator.close()
