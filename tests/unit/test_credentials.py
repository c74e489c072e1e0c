from mep.credentials import hash_secret, new_credentials, verify_secret


def test_issue_hash_verify() -> None:
    client_id, secret = new_credentials("app-1")
    assert client_id.startswith("app-1.") and len(secret) >= 32
    stored = hash_secret(secret)
    assert secret not in stored and stored.startswith("scrypt$")
    assert verify_secret(secret, stored)
    assert not verify_secret(secret + "x", stored)
    assert not verify_secret(secret, "garbage")
    assert hash_secret(secret) != stored  # salted
