"""The native HTTP/1.1 client: `NativeTransport`, the default transport.

pool.py pools connections (limits, idle reuse, retry policy), connection.py speaks the
protocol on one socket, request.py writes request heads, proxy.py opens CONNECT tunnels.
"""

from providers.http1.pool import NativeTransport

__all__ = ["NativeTransport"]
