"""Mutual TLS on Mm5: with ``mm5.tls.ca`` set, only clients with a certificate from that CA get in."""
from __future__ import annotations

from pathlib import Path

import pytest

from mep.errors import PeerUnavailable
from mep.mm5.client import ClientTls, Mm5Client
from mepm.certs import CertPaths, init_certs
from tests.fixtures.mep_daemon import MepFactory

pytestmark = pytest.mark.asyncio


async def test_mtls_admits_only_clients_with_a_certificate_from_the_ca(
    mep_factory: MepFactory, mm5_certs: CertPaths, tmp_path: Path
) -> None:
    mep = mep_factory("tls", certs=mm5_certs).start()
    assert "security=mtls" in mep.log_tail()
    good = ClientTls(ca=mm5_certs.ca_cert, cert=mm5_certs.client_cert, key=mm5_certs.client_key)
    async with Mm5Client(mep.target, tls=good) as client:
        assert (await client.health()).serving

    stranger = init_certs(tmp_path / "other-ca")  # same names, another CA
    refused = {
        "no client certificate": ClientTls(ca=mm5_certs.ca_cert),
        "a certificate from another CA": ClientTls(
            ca=mm5_certs.ca_cert, cert=stranger.client_cert, key=stranger.client_key
        ),
        "the MEP's certificate checked against another CA": ClientTls(
            ca=stranger.ca_cert, cert=mm5_certs.client_cert, key=mm5_certs.client_key
        ),
        "plaintext": None,
    }
    for what, tls in refused.items():
        async with Mm5Client(mep.target, tls=tls, timeout_s=3) as client:
            with pytest.raises(PeerUnavailable, match="does not answer"):
                await client.health()
            with pytest.raises(PeerUnavailable):
                await client.get_state()
        assert mep.running, what


async def test_the_server_name_is_verified(mep_factory: MepFactory, tmp_path: Path) -> None:
    certs = init_certs(tmp_path / "certs", sans=["mep1.edge.example"])  # no loopback name or address
    mep = mep_factory("named", certs=certs).start()
    tls = ClientTls(ca=certs.ca_cert, cert=certs.client_cert, key=certs.client_key)
    async with Mm5Client(mep.target, tls=tls, timeout_s=3) as client:
        with pytest.raises(PeerUnavailable):
            await client.health()
    named = ClientTls(ca=certs.ca_cert, cert=certs.client_cert, key=certs.client_key, server_name="mep1.edge.example")
    async with Mm5Client(mep.target, tls=named) as client:
        assert (await client.health()).serving
