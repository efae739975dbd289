"""The tls stage against the reference server with a throwaway CA: handshake details, an
untrusted CA (exit 4), a plaintext probe of a TLS server (exit 3, hint --tls), mutual TLS."""

from __future__ import annotations

from collections.abc import Callable

from qr_sampler.server import EntropyServer
from qrs_cli.probe import ProbeOptions, ProbeTarget, TlsOptions, run_probe
from tests.sampler.entropy.grpc_test_support import TlsFiles

StartServer = Callable[..., EntropyServer]
FAST = ProbeOptions(total=4)


def _tls_server(start_server: StartServer, tls_files: TlsFiles, **options: object) -> str:
    server = start_server(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key),
                          **options)
    return server.address


def test_tls_with_the_right_ca_passes_and_describes_the_certificate(
        start_server: StartServer, tls_files: TlsFiles) -> None:
    address = _tls_server(start_server, tls_files)
    tls = TlsOptions(enabled=True, ca_cert=str(tls_files.ca), server_name="entropy.test")
    report = run_probe(ProbeTarget(address=address, tls=tls, connect_timeout_s=3), FAST)
    assert report.exit_code == 0, report.to_dict()
    details = report.stage("tls").details
    assert details["tls_version"].startswith("TLSv1.") and details["alpn"] == "h2"
    assert "commonName=entropy.test" in details["subject"]
    assert "DNS:entropy.test" in details["subject_alt_names"]
    assert details["days_left"] == 0  # the test certificate is valid for one day
    assert report.stage("tls").status == "warn"  # so it expires soon: a warning, not a failure


def test_an_untrusted_certificate_exits_4(start_server: StartServer,
                                          tls_files: TlsFiles) -> None:
    address = _tls_server(start_server, tls_files)
    tls = TlsOptions(enabled=True, ca_cert=str(tls_files.other_ca), server_name="entropy.test")
    report = run_probe(ProbeTarget(address=address, tls=tls, connect_timeout_s=3), FAST)
    stage = report.stage("tls")
    assert report.exit_code == 4 and "not trusted" in stage.summary
    assert "--tls-ca-cert" in stage.hint and report.calls == 0


def test_a_wrong_server_name_exits_4(start_server: StartServer, tls_files: TlsFiles) -> None:
    address = _tls_server(start_server, tls_files)
    tls = TlsOptions(enabled=True, ca_cert=str(tls_files.ca), server_name="other.test")
    report = run_probe(ProbeTarget(address=address, tls=tls, connect_timeout_s=3), FAST)
    assert report.exit_code == 4 and "--tls-server-name" in report.stage("tls").hint


def test_plaintext_probe_of_a_tls_server_hints_at_tls(start_server: StartServer,
                                                      tls_files: TlsFiles) -> None:
    address = _tls_server(start_server, tls_files)
    report = run_probe(ProbeTarget(address=address, connect_timeout_s=1), FAST)
    assert report.exit_code == 3 and "--tls" in report.stage("connect").hint


def test_mutual_tls_passes_with_a_client_certificate(start_server: StartServer,
                                                     tls_files: TlsFiles) -> None:
    address = _tls_server(start_server, tls_files, tls_client_ca=str(tls_files.ca))
    tls = TlsOptions(enabled=True, ca_cert=str(tls_files.ca), server_name="entropy.test",
                     client_cert=str(tls_files.client_cert), client_key=str(tls_files.client_key))
    report = run_probe(ProbeTarget(address=address, tls=tls, connect_timeout_s=3), FAST)
    assert report.exit_code == 0, report.to_dict()


def test_mutual_tls_without_a_client_certificate_exits_4(start_server: StartServer,
                                                         tls_files: TlsFiles) -> None:
    address = _tls_server(start_server, tls_files, tls_client_ca=str(tls_files.ca))
    tls = TlsOptions(enabled=True, ca_cert=str(tls_files.ca), server_name="entropy.test")
    report = run_probe(ProbeTarget(address=address, tls=tls, connect_timeout_s=1), FAST)
    assert report.exit_code == 4 and "--tls-client-cert" in report.stage("tls").hint
