"""`depthmill up --tls`: a self-signed certificate a browser can be served with, kept and reused."""

from __future__ import annotations

import ipaddress
import ssl
import threading

import httpx
import uvicorn
from cryptography import x509

from cluster.config.tls import self_signed
from cluster.runtime import free_port
from serve_app.api.main import create_api


def names(cert_path) -> set:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_the_certificate_names_localhost_and_the_lan_addresses_and_is_kept(tmp_path):
    cert, key = self_signed(tmp_path / "tls", ["192.168.1.20"])
    assert x509.DNSName("localhost") in names(cert)
    assert x509.IPAddress(ipaddress.ip_address("192.168.1.20")) in names(cert)
    assert key.stat().st_mode & 0o077 == 0  # the key is the owner's alone
    made = cert.read_bytes()
    assert self_signed(tmp_path / "tls", ["192.168.1.20"])[0].read_bytes() == made  # reused
    # A new address (the laptop moved networks) makes a new one that names it.
    cert2, _ = self_signed(tmp_path / "tls", ["10.0.0.7"])
    assert cert2.read_bytes() != made
    assert x509.IPAddress(ipaddress.ip_address("10.0.0.7")) in names(cert2)


def test_the_app_serves_https_with_it(tmp_path):
    cert, key = self_signed(tmp_path / "tls", [])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(), host="127.0.0.1", port=port, log_config=None,
                                           ssl_certfile=cert, ssl_keyfile=key))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        context = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(f"https://localhost:{port}/", verify=context)
        assert r.status_code == 200 and "depthmill" in r.text
    finally:
        server.should_exit = True
        thread.join(10)
