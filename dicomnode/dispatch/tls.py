"""TLS for the associations the node opens (DICOM TLS, PS3.15 B.1): the peer's certificate is verified, and
the node presents its own when mutual TLS is configured."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from dicomnode.errors import ConfigError


@dataclass(frozen=True)
class ClientTLS:
    """How to wrap an association's socket: the context, and the name the peer's certificate must carry."""

    context: ssl.SSLContext
    server_name: str


def client_tls(
    server_name: str, *, ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ClientTLS:
    """A client context (TLS 1.2 or newer, peer certificate and name verified) trusting ``ca_file`` (else the
    system's CAs), presenting ``cert_file``/``key_file`` when given."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files for {server_name}: cannot load ({type(exc).__name__}: {exc})") from exc
    return ClientTLS(context, server_name)
