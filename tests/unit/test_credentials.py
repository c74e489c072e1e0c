from mep.credentials import hash_secret, is_secret_hash, new_credentials, verify_secret


def test_issue_hash_verify() -> None:
    client_id, secret = new_credentials("app-1")
    assert client_id.startswith("app-1.") and len(secret) >= 32
    stored = hash_secret(secret)
    assert secret not in stored and stored.startswith("scrypt$")
    assert verify_secret(secret, stored)
    assert not verify_secret(secret + "x", stored)
    assert not verify_secret(secret, "garbage")
    assert hash_secret(secret) != stored  # salted


def test_secret_hash_form() -> None:
    _, secret = new_credentials("app-1")
    assert is_secret_hash(hash_secret(secret))
    for bad in ("", secret, "scrypt$$", "md5$AAAA$BBBB", "scrypt$" + "A" * 24 + "$short", "scrypt$!!$??"):
        assert not is_secret_hash(bad), bad
