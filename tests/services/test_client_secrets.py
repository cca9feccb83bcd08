"""services.client_secrets: new secrets, salted scrypt hashes, and checking a secret against its hash."""

from __future__ import annotations

import pytest

from services.client_secrets import hash_secret, new_secret, verify_secret

SECRET = "a-client-secret-of-some-length"


def test_a_secret_verifies_against_its_hash():
    hashed = hash_secret(SECRET)
    assert verify_secret(SECRET, hashed)
    assert SECRET not in hashed
    assert hashed.startswith("scrypt$")


def test_hashes_are_salted():
    assert hash_secret(SECRET) != hash_secret(SECRET)


def test_a_wrong_secret_does_not_verify():
    hashed = hash_secret(SECRET)
    assert not verify_secret(SECRET + "x", hashed)
    assert not verify_secret("", hashed)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not-a-hash",
        "scrypt$16384$8$1$onlyfive",
        "bcrypt$16384$8$1$c2FsdA==$ZGlnZXN0",
        "scrypt$many$8$1$c2FsdA==$ZGlnZXN0",
        "scrypt$16384$8$1$!!!$ZGlnZXN0",
        "scrypt$16384$8$1$c2FsdA==$ZGlnZXN0$extra",
        "scrypt$3$8$1$c2FsdA==$ZGlnZXN0",
    ],
)
def test_a_malformed_hash_does_not_verify(stored):
    assert verify_secret(SECRET, stored) is False


def test_new_secrets_are_long_and_different():
    assert len(new_secret()) >= 32
    assert new_secret() != new_secret()
