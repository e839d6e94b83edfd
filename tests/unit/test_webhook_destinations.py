"""Where a webhook may go (issue 14): the URL's shape, and the addresses it reaches. Pure rules: no
app, no database, no network (names are resolved by a patched socket.getaddrinfo)."""
import ipaddress
import socket

import pytest

from loyalty.webhooks import destinations
from loyalty.webhooks.destinations import Refused, check, kind_of, parse, resolve


def answers(*addresses):
    """A socket.getaddrinfo whose every name resolves to `addresses`, counting its calls."""
    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        getaddrinfo.calls.append(host)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in addresses]
    getaddrinfo.calls = []
    return getaddrinfo


def test_an_ordinary_https_url_is_parsed_into_what_a_delivery_needs():
    destination = parse("https://Hooks.CRM.example.com/loyalty/in?team=7#ignored")

    assert (destination.scheme, destination.host, destination.port, destination.target, destination.address) == \
        ("https", "hooks.crm.example.com", 443, "/loyalty/in?team=7", None)
    assert parse("http://crm.example.com:8080").port == 8080 and parse("http://crm.example.com:8080").target == "/"
    v6 = parse("http://[2606:4700:4700::1111]:8443/h")
    assert (v6.host, v6.port, v6.address) == \
        ("2606:4700:4700::1111", 8443, ipaddress.ip_address("2606:4700:4700::1111"))


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:5099/a\r\nX-Injected: 1", "line breaks"),
    ("http://crm.example.com/a\nb", "line breaks"),
    ("http://crm.example.com/a\tb", "Spaces"),
    ("http://crm.example.com/a b", "Spaces"),
    (" http://crm.example.com/", "Spaces"),
    ("http://crm.example.com/\x00", "control"),
    ("http://crm.example.com/\x7f", "control"),
    ("http://bücher.example/", "xn--"),
    ("http://crm.example.com/\u2028", "non-ASCII"),
    ("http://127.0.0.1:abc/", "port"),
    ("http://crm.example.com:0/", "port"),
    ("http://crm.example.com:65536/", "port"),
    ("http://crm.example.com:-1/", "port"),
    ("http://crm.example.com:８０/", "non-ASCII"),
    ("http://crm.example.com:/", "port"),
    ("http://user:secret@crm.example.com/", "password"),
    ("http://user@crm.example.com/", "password"),
    ("http://crm.example.com@evil.example/", "password"),
    ("ftp://crm.example.com/", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("crm.example.com/hooks", "http:// or https://"),
    ("https:///no-host", "host"),
    ("http://:80/", "host"),
    ("http://crm..example.com/", "host name"),
    ("http://-crm.example.com/", "host name"),
    ("http://crm.example.com" + "/a" * 250, "500 characters"),
    ("http://1.2.3.999/", "IPv4"),
    ("http://1.2.3.4.5/", "IPv4"),
    ("http://0x1g.1/", "IPv4"),
    ("http://[::1/", "URL"),
    ("http://[not-v6]/", "URL"),
    ("http://[1:2:3]/", "URL"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("", "URL"),
])
def test_a_malformed_url_is_refused_with_what_to_change(url, says):
    with pytest.raises(Refused) as refused:
        parse(url)
    assert says in refused.value.message
    assert refused.value.message.endswith(".")


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.255.255.254:8080/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::127.0.0.1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://10.0.0.5/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1:5432/", "private"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::ffff:192.168.0.1]/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "shared"),
    ("http://100.127.255.255/", "shared"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://192.0.2.10/", "special-purpose"),
    ("http://198.18.0.1/", "special-purpose"),
    ("http://[2001:db8::1]/", "special-purpose"),
    ("http://localhost:5000/", "loopback"),
    ("http://LOCALHOST./", "loopback"),
    ("http://api.localhost/", "loopback"),
])
def test_addresses_that_are_not_public_are_refused_in_every_spelling_without_asking_dns(monkeypatch, url, kind):
    asked = answers("93.184.215.14")
    monkeypatch.setattr(socket, "getaddrinfo", asked)

    with pytest.raises(Refused) as refused:
        check(url)
    assert f" {kind}" in refused.value.message and "public internet addresses only" in refused.value.message
    assert asked.calls == []


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"])
def test_public_addresses_pass_including_v6_forms_of_a_public_v4(address):
    assert kind_of(address) is None


def test_a_host_name_made_of_hex_looking_labels_is_a_name():
    assert parse("http://0x1g.com/").address is None


@pytest.mark.parametrize("address", ["2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "100::1",
                                     "64:ff9b:1::a00:1", "fec0::1"])
def test_tunnel_discard_and_site_local_v6_are_not_public(address):
    assert kind_of(address) is not None


def test_private_destinations_are_allowed_when_the_setting_says_so(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", answers("127.0.0.1"))

    assert resolve(parse("http://127.0.0.1:5099/hooks"), allow_private=True) == \
        [(socket.AF_INET, ("127.0.0.1", 5099))]
    assert resolve(parse("http://[::1]:5099/"), allow_private=True) == [(socket.AF_INET6, ("::1", 5099, 0, 0))]
    assert resolve(parse("http://localhost:5099/"), allow_private=True) == [(socket.AF_INET, ("127.0.0.1", 5099))]
    with pytest.raises(Refused):
        check("http://user:pw@127.0.0.1:5099/", allow_private=True)  # the shape rules still hold


def test_a_name_is_resolved_and_every_address_it_has_must_be_public(monkeypatch):
    public = answers("93.184.215.14", "2606:2800:220:1:248:1893:25c8:1946")
    monkeypatch.setattr(socket, "getaddrinfo", public)
    assert resolve(parse("https://crm.example.com/hooks")) == [
        (socket.AF_INET, ("93.184.215.14", 443)),
        (socket.AF_INET6, ("2606:2800:220:1:248:1893:25c8:1946", 443, 0, 0))]
    assert public.calls == ["crm.example.com"]

    for addresses, kind in [(("10.1.2.3",), "private"), (("93.184.215.14", "169.254.169.254"), "link-local"),
                            (("2606:4700::1111", "::1"), "loopback"), (("::ffff:10.1.2.3",), "private")]:
        monkeypatch.setattr(socket, "getaddrinfo", answers(*addresses))
        with pytest.raises(Refused) as refused:
            resolve(parse("https://crm.example.com/hooks"))
        message = refused.value.message
        assert f"resolves to a {kind}" in message or f"resolves to an {kind}" in message
        assert not any(a in message for a in addresses)  # the kind, never the internal address


def test_a_name_that_does_not_resolve_is_refused_in_our_words(monkeypatch):
    def nowhere(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", nowhere)

    with pytest.raises(Refused) as refused:
        check("https://crm.exmaple.com/hooks")
    assert refused.value.message.startswith("The host name crm.exmaple.com does not resolve")
    assert "Name or service" not in refused.value.message


def test_the_rules_module_needs_no_app():
    assert "flask" not in destinations.__dict__ and "db" not in destinations.__dict__
