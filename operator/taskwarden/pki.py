"""X.509 for Taskwarden's own TLS: EC P-256 keys, a CA and the certificates it issues.

One certificate profile for every TLS endpoint Taskwarden creates:
- the webhook server's serving material (`generate_tls`, `tls_problem`), stored in a Secret and
  renewed by taskwarden.server.tls;
- the local control plane's CA, apiserver serving and admin client certificates
  (taskwarden.controlplane.write_pki).
Pure apart from key generation (the `cryptography` package); no files, no API, time passed in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_VALIDITY: Final = 365 * 86400.0
"""Seconds a webhook CA and serving certificate are valid."""
RENEW_BEFORE: Final = 30 * 86400.0
"""Seconds before expiry at which the webhook material is regenerated."""
BACKDATE: Final = 300.0
"""Seconds a certificate is valid before it is made: tolerates clock skew between hosts."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def name(common_name: str, organization: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def san(host: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS name SAN."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    now: float,
    validity: float,
    ca: bool = False,
    hosts: Sequence[str] = (),
    client: bool = False,
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer_key`, valid from `now` for `validity` seconds.

    A CA may sign leaf certificates only (path length 0). A leaf serves `hosts` (subjectAltName,
    serverAuth) when any are given, and authenticates a client when `client` is set."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(now - BACKDATE, dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(now + validity, dt.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        return builder.sign(issuer_key, hashes.SHA256())
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([san(h) for h in hosts]), critical=False
        )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if hosts else []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
        critical=False,
    )
    return builder.sign(issuer_key, hashes.SHA256())


# --- The webhook server's serving material -------------------------------------------------------


@dataclass(frozen=True)
class TLSMaterial:
    ca_bundle: str
    """PEM: the current CA first, then the previous CA while it is still valid."""
    cert: str
    key: str


def generate_tls(hosts: Sequence[str], now: float, previous_bundle: str = "") -> TLSMaterial:
    """A fresh CA and serving certificate for `hosts`, both valid CERT_VALIDITY from `now`."""
    ca_key = new_key()
    ca_name = name("taskwarden-webhook-ca")
    ca = certificate(ca_name, ca_key, ca_name, ca_key, now=now, validity=CERT_VALIDITY, ca=True)
    key = new_key()
    cert = certificate(
        name("taskwarden-webhook"),
        key,
        ca_name,
        ca_key,
        now=now,
        validity=CERT_VALIDITY,
        hosts=hosts,
    )
    bundle = cert_pem(ca)
    with contextlib.suppress(ValueError, IndexError):
        old = x509.load_pem_x509_certificates(previous_bundle.encode())[0]
        if old.not_valid_after_utc.timestamp() > now:
            bundle += cert_pem(old)  # replicas still serving the old certificate stay trusted
    return TLSMaterial(ca_bundle=bundle, cert=cert_pem(cert), key=key_pem(key))


def tls_problem(material: TLSMaterial, hosts: Sequence[str], now: float) -> str | None:
    """Why `material` must be regenerated, or None when it is good for RENEW_BEFORE more."""
    try:
        cert = x509.load_pem_x509_certificate(material.cert.encode())
        ca = x509.load_pem_x509_certificates(material.ca_bundle.encode())[0]
        key = serialization.load_pem_private_key(material.key.encode(), password=None)
    except (ValueError, IndexError, TypeError) as e:
        return f"unreadable ({type(e).__name__})"
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "the key does not match the certificate"
    if cert.issuer != ca.subject:
        return "the certificate was not issued by the CA"
    for what, c in (("certificate", cert), ("CA", ca)):
        if c.not_valid_after_utc.timestamp() - now < RENEW_BEFORE:
            return f"the {what} expires at {c.not_valid_after_utc.isoformat()}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the certificate has no subjectAltName"
    missing = [h for h in hosts if san(h) not in sans]
    if missing:
        return f"the certificate does not name {', '.join(missing)}"
    return None
