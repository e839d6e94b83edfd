"""Where a webhook may be sent: the rules for its URL and for the addresses it reaches.

Pure rules plus name resolution; no app, no database. A URL is `parse`d (http or https, a host, a
numeric port, no credentials, printable ASCII only, at most 500 characters), then `resolve`d: every
address its host has must be public unless private destinations are allowed
(LOYALTY_WEBHOOK_ALLOW_PRIVATE, for development and tests). The same two steps run when a
subscription is made and before each delivery, which then connects to the address checked here, so
a name that re-resolves in between cannot send us elsewhere.

Every refusal is a `Refused` whose message is a sentence in our words, fit for an admin to read:
it never carries what a remote host said, nor the addresses a name resolved to.
"""
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_LENGTH = 500  # the column's size
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")

# Categories checked by hand: Python's is_private/is_global have changed between releases (3.11
# misjudges IPv4-mapped addresses), and an admin is told which kind of address was refused.
_KINDS = [
    ("unspecified", ["0.0.0.0/8", "::/128"]),
    ("loopback", ["127.0.0.0/8", "::1/128"]),
    ("link-local", ["169.254.0.0/16", "fe80::/10"]),
    ("private", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10",
                 "64:ff9b:1::/48"]),  # the last: NAT64 for local use (RFC 8215)
    ("shared (carrier-grade NAT)", ["100.64.0.0/10"]),
    ("multicast", ["224.0.0.0/4", "ff00::/8"]),
    ("reserved", ["240.0.0.0/4", "100::/64"]),
]
KINDS = [(kind, [ipaddress.ip_network(n) for n in networks]) for kind, networks in _KINDS]
# IPv6 forms that carry an IPv4 address: judged by the IPv4 address they lead to.
_EMBEDDING = {
    ipaddress.ip_network("::ffff:0:0/96"): lambda ip: ip.packed[-4:],        # IPv4-mapped
    ipaddress.ip_network("::/96"): lambda ip: ip.packed[-4:],                # IPv4-compatible
    ipaddress.ip_network("::ffff:0:0:0/96"): lambda ip: ip.packed[-4:],      # IPv4-translated (SIIT)
    ipaddress.ip_network("64:ff9b::/96"): lambda ip: ip.packed[-4:],         # NAT64, well-known prefix
    ipaddress.ip_network("2002::/16"): lambda ip: ip.packed[2:6],            # 6to4
}


class Refused(ValueError):
    """A URL or an address a webhook may not go to; str() is a sentence for an admin."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Destination:
    scheme: str       # http | https
    host: str         # the host name in lower case, or the IP address in its canonical form
    port: int
    target: str       # path and query, as sent in the request line
    address: object   # the IP address when the URL names one, else None (a name to resolve)

    @property
    def default_port(self):
        return 443 if self.scheme == "https" else 80


def parse(url):
    """The URL's parts, or Refused with what to change."""
    if not isinstance(url, str) or not url:
        raise Refused("Give the receiver's address as an http:// or https:// URL.")
    if len(url) > MAX_LENGTH:
        raise Refused(f"At most {MAX_LENGTH} characters.")
    if not PRINTABLE_ASCII.fullmatch(url):
        raise Refused("Spaces, line breaks, control and non-ASCII characters are not allowed in a URL: "
                      "percent-encode them, and write an international host name in its xn-- form.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise Refused("This is not a valid URL; write it as https://host[:port]/path.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Refused("Must be an http:// or https:// address.")
    if "@" in parts.netloc:
        raise Refused("Must not contain a user name or password; "
                      "the receiver checks the signature header instead.")
    host, port = _host_and_port(parts.netloc)
    scheme = parts.scheme.lower()
    address = _ip_literal(host)
    if address is None:
        host = _host_name(host)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(scheme, str(address) if address else host,
                       port or (443 if scheme == "https" else 80), target, address)


def _host_and_port(netloc):
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket:
            raise Refused("An IPv6 address must be closed with ']'.")
        if rest and not rest.startswith(":"):
            raise Refused("This is not a valid URL; write it as https://host[:port]/path.")
        port = rest[1:] if rest else None
        host = "[" + host + "]"
    else:
        host, colon, port = netloc.partition(":")
        port = port if colon else None
    if not host or host == "[]":
        raise Refused("Must name a host, as in https://crm.example.com/hooks.")
    if port is None:
        return host, None
    if not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
        raise Refused("The port must be a number from 1 to 65535.")
    return host, int(port)


def _ip_literal(host):
    """The IPv4 or IPv6 address the host is written as (in any spelling a URL allows), else None."""
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Refused("The address between [ and ] is not a valid IPv6 address.") from None
        if address.scope_id:
            raise Refused("An IPv6 address must not carry a zone (%...).")
        return address
    labels = host.lower().rstrip(".").split(".")
    # As browsers do (WHATWG URL): a host whose last label is a number is an IPv4 address, in
    # decimal, octal (0177) or hex (0x7f), with 1 to 4 parts (127.1, 2130706433), and nothing else.
    if not NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    try:
        numbers = [_ipv4_number(label) for label in labels]
        if len(numbers) > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
            raise ValueError(host)
        value = numbers[-1]
        for i, n in enumerate(numbers[:-1]):
            value += n << (8 * (3 - i))
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise Refused("The host looks like an IPv4 address but is not a valid one.") from None


def _ipv4_number(label):
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    return int(label, 10)


def _host_name(host):
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if len(name) > 253 or not all(LABEL.fullmatch(label) for label in name.split(".")):
        raise Refused("The host is not a valid host name (letters, digits and hyphens, "
                      "in dot-separated labels).")
    return name


def kind_of(address):
    """None for a public address, else what kind of address it is ('private', 'loopback', ...)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and int(ip) > 1:  # :: and ::1 are themselves, not IPv4-compatible forms
        for network, embedded in _EMBEDDING.items():
            if ip in network:
                return kind_of(ipaddress.IPv4Address(embedded(ip)))
    for kind, networks in KINDS:
        if any(ip in network for network in networks):
            return kind
    return None if ip.is_global else "special-purpose (not public)"


def check_address(address, resolved=False):
    """Refused unless the address is public."""
    kind = kind_of(address)
    if kind:
        verb = "resolves to" if resolved else "is"
        article = "an" if kind[0] in "aeiou" else "a"
        raise Refused(f"Not allowed: the destination {verb} {article} {kind} address; "
                      "webhooks are sent to public internet addresses only.")


def resolve(destination, allow_private=False):
    """The (family, sockaddr) pairs to connect to, every one of them allowed; Refused otherwise.
    Looks the name up (socket.getaddrinfo) unless the URL gives an address."""
    if destination.address is not None:
        if not allow_private:
            check_address(destination.address)
        return [_sockaddr(destination.address, destination.port)]
    if not allow_private and (destination.host == "localhost" or destination.host.endswith(".localhost")):
        check_address("127.0.0.1")  # RFC 6761: always loopback, whatever a resolver says
    try:
        found = socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        raise Refused(f"The host name {destination.host} does not resolve; check its spelling "
                      "(or try again later if its DNS records are new).") from None
    addresses = []
    for family, _, _, _, sockaddr in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not allow_private:
            check_address(address, resolved=True)  # any one private address refuses the name
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise Refused(f"The host name {destination.host} has no IPv4 or IPv6 address.")
    return addresses


def _sockaddr(address, port):
    if address.version == 4:
        return socket.AF_INET, (str(address), port)
    return socket.AF_INET6, (str(address), port, 0, 0)


def check(url, allow_private=False):
    """The URL parsed and its destination checked (at subscription); Refused otherwise."""
    destination = parse(url)
    resolve(destination, allow_private)
    return destination
