"""TLS for the associations the node opens (DICOM TLS, PS3.15 B.1): the peer's certificate is verified, and
the node presents its own when mutual TLS is configured.

pynetdicom only logs why a TLS handshake failed, and reports it as a failed TCP connection. Each association
therefore gets a :class:`TlsWatch` in place of the context: the sockets it makes keep the ``ssl.SSLError`` of
their handshake (or of the alert a TLS 1.3 server sends after the client's handshake, when it refuses the
client's certificate), so that a certificate the peer or the node does not accept is told from a network error.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from dicomnode.errors import ConfigError

# "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ... (_ssl.c:1006)": the words in the middle.
_SSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")
# The connection ended in the middle of the handshake: the network's (or a restarting peer's) doing, retried as a
# network error. Every other ssl.SSLError is a certificate, trust or protocol mismatch that no retry changes.
_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class _WatchedSSLSocket(ssl.SSLSocket):
    """An SSLSocket that hands the first TLS error of its handshake, or of a later read, to its watch."""

    watch: TlsWatch | None = None

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except ssl.SSLError as exc:
            self._seen(exc)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            self._seen(exc)
            raise

    def _seen(self, exc: ssl.SSLError) -> None:
        if self.watch is not None and self.watch.error is None:
            self.watch.error = exc


class TlsWatch:
    """Stands in for the SSLContext in pynetdicom's ``tls_args`` for one association (pynetdicom only calls
    ``wrap_socket``), and keeps the first TLS error that association's socket raised."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.error: ssl.SSLError | None = None

    def wrap_socket(
        self, sock: socket.socket, server_side: bool = False, server_hostname: str | None = None
    ) -> ssl.SSLSocket:
        wrapped = self.context.wrap_socket(sock, server_side=server_side, server_hostname=server_hostname)
        if isinstance(wrapped, _WatchedSSLSocket):
            wrapped.watch = self
        return wrapped

    def failure(self) -> tuple[bool, str] | None:
        """None when no TLS error was seen; else whether a retry could help (the connection broke during the
        handshake) and the reason in words, e.g. "certificate verify failed: unable to get local issuer
        certificate"."""
        exc = self.error
        if exc is None:
            return None
        return isinstance(exc, _TRANSIENT), describe_ssl_error(exc)


def describe_ssl_error(exc: ssl.SSLError) -> str:
    """The reason of an ssl error in words, without OpenSSL's library tag and source line."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    text = _SSL_NOISE.sub("", str(exc.strerror or exc)).strip()
    return text or type(exc).__name__


@dataclass(frozen=True)
class ClientTLS:
    """How to wrap an association's socket: the context, and the name the peer's certificate must carry."""

    context: ssl.SSLContext
    server_name: str

    def watch(self) -> TlsWatch:
        """A watch for one association (see :class:`TlsWatch`)."""
        return TlsWatch(self.context)


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
    context.sslsocket_class = _WatchedSSLSocket
    return ClientTLS(context, server_name)
