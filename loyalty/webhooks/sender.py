"""One webhook POST, to an address checked just before (destinations.resolve), never redirected.

Answers (status code or None, error or None). The error says what failed in our words ("connection
refused", "timed out after 10 s", "answered 500"): an admin reads it in the delivery log, and the
remote's own words (its body, its reason phrase, a banner) would turn that log into a port scanner.
"""
import errno
import http.client
import logging
import socket
import ssl

from loyalty.webhooks import destinations

log = logging.getLogger(__name__)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self):  # the socket is connected before; a reconnect would go around the check
        raise ConnectionAbortedError("no connection outside the checked address")


class _HTTPSConnection(http.client.HTTPSConnection):
    connect = _HTTPConnection.connect


def post(url, body, headers, timeout, allow_private=False):
    """POST `body` to `url` and return (status code or None, error or None)."""
    try:
        destination = destinations.parse(url)
    except destinations.Refused as refused:
        return None, f"The subscription's URL is not valid ({refused.message}) Change it to resend."[:500]
    try:
        addresses = destinations.resolve(destination, allow_private)
    except destinations.Refused as refused:
        return None, refused.message[:500]
    try:
        return _exchange(destination, addresses, body, headers, timeout)
    except Exception as error:  # noqa: BLE001 - whatever happened, it is this delivery's failure
        return None, _in_our_words(error, timeout)


def _exchange(destination, addresses, body, headers, timeout):
    sock = _connect(addresses, timeout)
    try:
        if destination.scheme == "https":
            context = ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=destination.host)  # SNI, certificate name
            connection = _HTTPSConnection(destination.host, destination.port, timeout=timeout, context=context)
        else:
            connection = _HTTPConnection(destination.host, destination.port, timeout=timeout)
        connection.sock = sock  # http.client sends Host: from the name, over the address we checked
        connection.request("POST", destination.target, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        response.close()  # its body is the remote's business: never read into our log
    finally:
        sock.close()
    if 200 <= status < 300:
        return status, None
    if 300 <= status < 400:
        return status, f"answered {status}; redirects are not followed"
    return status, f"answered {status}"


def _connect(addresses, timeout):
    """A socket connected to the first of the checked addresses that accepts."""
    failure = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            sock.close()
            failure = error
    raise failure


def _in_our_words(error, timeout):
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return "the destination's TLS certificate could not be verified"
    if isinstance(error, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "the connection was closed before an answer"
    if isinstance(error, http.client.HTTPException):
        return "the answer was not valid HTTP"
    if isinstance(error, OSError) and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "the destination is unreachable"
    if isinstance(error, OSError):
        return "the connection failed"
    log.exception("webhook delivery failed unexpectedly")
    return "the delivery failed unexpectedly; the error is in the service's log"
