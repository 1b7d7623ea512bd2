"""A self-signed certificate for `depthmill up --tls`: WebXR and a phone's motion sensors work
only on secure pages, and a headset reaches the gateway at a LAN address, not at localhost."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 825  # the longest that Apple's platforms accept for a TLS server certificate
RENEW_WITHIN = datetime.timedelta(days=30)


def _names(addresses: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    for address in ["127.0.0.1", "::1", *addresses]:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    return list(dict.fromkeys(names))


def _still_good(cert_path: Path, addresses: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_WITHIN
    return fresh and set(_names(addresses)) <= set(san)


def self_signed(directory: Path, addresses: list[str]) -> tuple[Path, Path]:
    """A certificate and key for this machine's names and ``addresses``, kept in ``directory``
    and made again only when it nears expiry or the addresses change (so a browser's exception
    for it lasts)."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if key_path.exists() and _still_good(cert_path, addresses):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"depthmill on {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(addresses)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
