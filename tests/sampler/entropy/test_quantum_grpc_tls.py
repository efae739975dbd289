"""TLS and mutual TLS between the client and the reference server, with a throwaway CA."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.server import EntropyServer
from tests.sampler.entropy.grpc_test_support import TlsFiles

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]


@pytest.mark.parametrize("mode", ["unary", "server_streaming", "bidi_streaming"])
def test_tls_with_a_private_ca(mode: str, tls_files: TlsFiles, start_server: Start,
                               make_source: Make) -> None:
    server = start_server(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key))
    source = make_source(server.address, mode=mode, tls=True, tls_ca_cert=str(tls_files.ca))
    assert len(source.get_random_bytes(2048)) == 2048
    health = source.health()
    assert health["tls"] is True and health["mtls"] is False


def test_server_name_override(tls_files: TlsFiles, start_server: Start,
                              make_source: Make) -> None:
    server = start_server("localhost:0", tls_cert=str(tls_files.server_cert),
                          tls_key=str(tls_files.server_key))
    port = server.address.rsplit(":", 1)[1]
    # Dial 127.0.0.1 but check the certificate against the name it was issued for.
    source = make_source(f"127.0.0.1:{port}", tls=True, tls_ca_cert=str(tls_files.ca),
                         tls_server_name="entropy.test")
    assert len(source.get_random_bytes(16)) == 16


def test_untrusted_ca_and_wrong_name_are_refused(tls_files: TlsFiles, start_server: Start,
                                                 make_source: Make) -> None:
    server = start_server(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key))
    untrusted = make_source(server.address, tls=True, tls_ca_cert=str(tls_files.other_ca),
                            retry_count=0)
    with pytest.raises(EntropyUnavailableError, match="UNAVAILABLE"):
        untrusted.get_random_bytes(16)
    wrong_name = make_source(server.address, tls=True, tls_ca_cert=str(tls_files.ca),
                             tls_server_name="not-the-server.test", retry_count=0)
    with pytest.raises(EntropyUnavailableError, match="UNAVAILABLE"):
        wrong_name.get_random_bytes(16)
    plaintext = make_source(server.address, retry_count=0, timeout_s=2.0)
    with pytest.raises(EntropyUnavailableError):
        plaintext.get_random_bytes(16)
    assert server.requests_served == 0


def test_mutual_tls(tls_files: TlsFiles, start_server: Start, make_source: Make) -> None:
    server = start_server(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key),
                          tls_client_ca=str(tls_files.ca))
    source = make_source(server.address, mode="bidi_streaming", tls=True,
                         tls_ca_cert=str(tls_files.ca), tls_client_cert=str(tls_files.client_cert),
                         tls_client_key=str(tls_files.client_key))
    assert len(source.get_random_bytes(512)) == 512
    assert source.health()["mtls"] is True
    anonymous = make_source(server.address, tls=True, tls_ca_cert=str(tls_files.ca),
                            retry_count=0)
    with pytest.raises(EntropyUnavailableError, match="UNAVAILABLE"):
        anonymous.get_random_bytes(512)
    assert server.requests_served == 1
