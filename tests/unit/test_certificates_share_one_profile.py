"""taskwarden.pki issues every certificate: the webhook's serving material and the local
control plane's CA, apiserver serving and admin client certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from taskwarden import controlplane, pki


def load(d: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((d / name).read_bytes())


def test_local_control_plane_pki_chains_to_its_ca(tmp_path: Path) -> None:
    controlplane.write_pki(tmp_path, now=1_000_000.0)
    ca, srv, adm = (load(tmp_path, f) for f in ("ca.crt", "apiserver.crt", "admin.crt"))
    srv.verify_directly_issued_by(ca)
    adm.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert all(pki.san(h) in sans for h in controlplane.SANS)
    usage = srv.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = adm.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    org = adm.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert org == "system:masters"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650
    assert {p.name for p in tmp_path.iterdir()} == {
        "ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key",
        "sa.key", "sa.pub", "webhook-client-ca.crt", "webhook-client.crt", "webhook-client.key",
    }  # fmt: skip
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.iterdir())


def test_the_apiserver_webhook_client_has_its_own_ca(tmp_path: Path) -> None:
    """Only the apiserver's webhook client certificate chains to the CA the admission port
    trusts; the admin certificate (and every other cluster client) does not."""
    controlplane.write_pki(tmp_path, now=1_000_000.0)
    wca, wcl, ca, adm = (
        load(tmp_path, f)
        for f in ("webhook-client-ca.crt", "webhook-client.crt", "ca.crt", "admin.crt")
    )
    wcl.verify_directly_issued_by(wca)
    assert wca.subject != ca.subject
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        adm.verify_directly_issued_by(wca)
    usage = wcl.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_webhook_and_control_plane_leaves_have_the_same_profile(tmp_path: Path) -> None:
    controlplane.write_pki(tmp_path, now=1_000_000.0)
    webhook = x509.load_pem_x509_certificate(
        pki.generate_tls(["127.0.0.1"], 1_000_000.0).cert.encode()
    )
    apiserver = load(tmp_path, "apiserver.crt")
    for cert in (webhook, apiserver):
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature
        assert not usage.value.key_cert_sign
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
