"""TLS to upstreams: the system's roots plus, per provider, a private CA and a client
certificate.

Why: a model server on a private network has a certificate from the company's CA, and
some want the gateway to prove itself with a certificate of its own. SSL_CERT_FILE
reaches the first only by replacing the system roots for the whole process, so every
public upstream would then fail. Here the CA is added to the roots, for one provider.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

__all__ = ["TlsOptions"]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """PEM file paths. `client_key` None: the key is in `client_cert`'s file."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying client context; ValueError names the option and file at fault."""
        if self.client_key and not self.client_cert:
            raise ValueError("client_key needs client_cert")
        ctx = ssl.create_default_context()  # the system's roots, hostname checks
        ctx.set_alpn_protocols(["http/1.1"])
        if self.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.ca_file)  # added to the roots
            except ssl.SSLError:
                raise ValueError(f"ca_file: {self.ca_file!r} holds no PEM certificate") from None
            except OSError as exc:
                raise ValueError(f"ca_file: cannot read {self.ca_file!r}: {_why(exc)}") from None
        if self.client_cert:
            try:
                # An encrypted key would make OpenSSL prompt on the terminal: refuse it.
                ctx.load_cert_chain(self.client_cert, self.client_key, password=_no_password)
            except ssl.SSLError:
                raise ValueError(
                    f"client_cert: {self.client_cert!r} and its key are not a PEM "
                    "certificate and the matching private key"
                ) from None
            except OSError as exc:
                raise ValueError(f"client_cert/client_key: cannot read: {_why(exc)}") from None
        return ctx


def _no_password() -> bytes:
    raise ValueError("client_key is encrypted: the gateway needs an unencrypted key file")


def _why(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"
