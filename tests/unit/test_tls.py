"""TLS and mTLS on the Check listener, with the certificate rotated in place (cert-manager
style) and picked up by new connections without a restart; Python ssl servers alike."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from authz.tls import ServerCertificates, TLSError, TLSFiles
from tests.support.authz import check_server
from tests.support.pki import CA, pem_cert, pem_key, write_pair


@pytest.fixture
def certs(tmp_path: Path) -> TLSFiles:
    return TLSFiles(tmp_path / "tls.crt", tmp_path / "tls.key")


def issue(ca: CA, files: TLSFiles, name: str = "authz") -> x509.Certificate:
    key, cert = ca.serving(name, dns=["localhost"], ips=["127.0.0.1"])
    write_pair(key, cert, files.cert, files.key)
    return cert


def served_certificate(port: int) -> x509.Certificate:
    """The certificate a new connection to 127.0.0.1:port is shown (not verified here)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def trusting(ca: CA, client: tuple[bytes, bytes] | None = None) -> grpc.ChannelCredentials:
    key, chain = client if client else (None, None)
    return grpc.ssl_channel_credentials(pem_cert(ca.cert), key, chain)


def check_status(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    """OK if a Check over a new TLS connection was answered (an empty policy denies it)."""
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        try:
            stub.Check(external_auth_pb2.CheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_grpc_tls_reloads_a_rotated_certificate(tmp_path: Path, certs: TLSFiles) -> None:
    first, second = CA.create("first"), CA.create("second")
    issued = issue(first, certs)
    tls = ServerCertificates(certs, interval=0)
    (tmp_path / "policies").mkdir()
    with check_server(tmp_path / "policies", credentials=tls.grpc_credentials()) as client:
        port = client.grpc_port
        assert check_status(port, trusting(first)) == grpc.StatusCode.OK
        assert served_certificate(port).serial_number == issued.serial_number
        rotated = issue(second, certs)  # written in place, as a Secret volume update does
        assert served_certificate(port).serial_number == rotated.serial_number
        assert check_status(port, trusting(second)) == grpc.StatusCode.OK
        assert check_status(port, trusting(first)) == grpc.StatusCode.UNAVAILABLE
        assert tls.generation == 2


def test_a_half_written_rotation_keeps_the_last_good_certificate(
    tmp_path: Path, certs: TLSFiles
) -> None:
    ca = CA.create("ca")
    issued = issue(ca, certs)
    tls = ServerCertificates(certs, interval=0)
    (tmp_path / "policies").mkdir()
    with check_server(tmp_path / "policies", credentials=tls.grpc_credentials()) as client:
        new_key, new_cert = ca.serving("authz", dns=[], ips=["127.0.0.1"])
        certs.cert.write_bytes(pem_cert(new_cert))  # the key is not written yet
        assert served_certificate(client.grpc_port).serial_number == issued.serial_number
        assert check_status(client.grpc_port, trusting(ca)) == grpc.StatusCode.OK
        certs.key.write_bytes(pem_key(new_key))  # now the pair matches again
        assert served_certificate(client.grpc_port).serial_number == new_cert.serial_number


def test_mtls_requires_a_client_certificate_from_the_client_ca(tmp_path: Path) -> None:
    server_ca, clients, strangers = CA.create("server"), CA.create("clients"), CA.create("x")
    files = TLSFiles(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    issue(server_ca, files)
    files.client_ca.write_bytes(pem_cert(clients.cert))  # type: ignore[union-attr]

    def client_of(ca: CA) -> tuple[bytes, bytes]:
        key, cert = ca.client("envoy", uris=["spiffe://cluster.local/ns/istio-system/sa/gw"])
        return pem_key(key), pem_cert(cert)

    tls = ServerCertificates(files, interval=0)
    (tmp_path / "policies").mkdir()
    with check_server(tmp_path / "policies", credentials=tls.grpc_credentials()) as client:
        port = client.grpc_port
        assert check_status(port, trusting(server_ca)) == grpc.StatusCode.UNAVAILABLE
        stranger = trusting(server_ca, client_of(strangers))
        assert check_status(port, stranger) == grpc.StatusCode.UNAVAILABLE
        envoy = client_of(clients)
        assert check_status(port, trusting(server_ca, envoy)) == grpc.StatusCode.OK
        # The client CA rotates too: the old clients' certificates stop working.
        files.client_ca.write_bytes(pem_cert(strangers.cert))  # type: ignore[union-attr]
        assert check_status(port, trusting(server_ca, envoy)) == grpc.StatusCode.UNAVAILABLE
        assert check_status(port, stranger) == grpc.StatusCode.OK


def test_python_ssl_servers_reload_through_the_sni_callback(certs: TLSFiles) -> None:
    """The context the HTTP check port and the admission webhook serve with."""
    first, second = CA.create("first"), CA.create("second")
    issue(first, certs)
    tls = ServerCertificates(certs, interval=0)

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.socket = tls.ssl_context().wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"

    def get(ca: CA) -> bytes:
        context = ssl.create_default_context(cadata=pem_cert(ca.cert).decode())
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read()  # type: ignore[no-any-return]

    try:
        assert get(first) == b"ok"
        issue(second, certs)
        assert get(second) == b"ok"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            get(first)
    finally:
        server.shutdown()
        server.server_close()


def test_reload_checks_the_files_at_most_once_per_interval(certs: TLSFiles) -> None:
    ca = CA.create("ca")
    issue(ca, certs)
    tls = ServerCertificates(certs, interval=0.3)
    issue(ca, certs)
    assert tls.current().generation == 1  # within the interval: not looked at
    time.sleep(0.35)
    assert tls.current().generation == 2


def test_a_secret_volume_symlink_swap_is_a_change(tmp_path: Path) -> None:
    """Kubelet writes a new ..timestamp directory and swaps the ..data symlink."""
    ca = CA.create("ca")
    old, new = tmp_path / "..2026_1", tmp_path / "..2026_2"
    for directory in (old, new):
        directory.mkdir()
        key, cert = ca.serving("authz", dns=[], ips=["127.0.0.1"])
        write_pair(key, cert, directory / "tls.crt", directory / "tls.key")
    (tmp_path / "..data").symlink_to(old.name)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    tls = ServerCertificates(TLSFiles(tmp_path / "tls.crt", tmp_path / "tls.key"), interval=0)
    before = tls.current().cert_pem
    (tmp_path / "..data_tmp").symlink_to(new.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert tls.current().cert_pem != before == (old / "tls.crt").read_bytes()


@pytest.mark.parametrize("broken", ["missing", "garbage", "mismatch", "bad-ca"])
def test_unusable_files_at_start_say_which_file(tmp_path: Path, broken: str) -> None:
    ca = CA.create("ca")
    files = TLSFiles(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    issue(ca, files)
    files.client_ca.write_bytes(pem_cert(ca.cert))  # type: ignore[union-attr]
    if broken == "missing":
        files.key.unlink()
        expected = f"{files.key}: no such file"
    elif broken == "garbage":
        files.cert.write_text("not a certificate")
        expected = "not a PEM certificate chain"
    elif broken == "mismatch":
        files.key.write_bytes(pem_key(ca.serving("other", dns=[], ips=[])[0]))
        expected = "not a PEM certificate chain and its private key"
    else:
        files.client_ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")  # type: ignore[union-attr]
        expected = f"{files.client_ca}: not a PEM CA bundle"
    with pytest.raises(TLSError) as info:
        ServerCertificates(files)
    assert expected in str(info.value)
