"""Throwaway X.509 for tests: a CA and serving and client certificates signed by it (EC P-256)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str, days: int = 1) -> CA:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def serving(
        self, common_name: str, dns: Sequence[str], ips: Sequence[str], days: int = 1
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A server certificate for these names and addresses, signed by this CA."""
        return self.leaf(common_name, dns, ips, days, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(
        self,
        common_name: str,
        *,
        uris: Sequence[str] = (),
        dns: Sequence[str] = (),
        days: int = 1,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A client certificate (mTLS) with these URI SANs (a SPIFFE ID, say) and DNS SANs,
        signed by this CA."""
        return self.leaf(common_name, dns, (), days, ExtendedKeyUsageOID.CLIENT_AUTH, uris)

    def leaf(
        self,
        common_name: str,
        dns: Sequence[str],
        ips: Sequence[str],
        days: int,
        usage: x509.ObjectIdentifier,
        uris: Sequence[str] = (),
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:  # an empty SubjectAlternativeName is not allowed (RFC 5280)
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def write_pair(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, cert_path: Path, key_path: Path
) -> None:
    """Write a key pair as PEM files, as a Secret volume holds them (tls.crt, tls.key)."""
    cert_path.write_bytes(pem_cert(cert))
    key_path.write_bytes(pem_key(key))
