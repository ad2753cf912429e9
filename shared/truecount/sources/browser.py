"""Browser context shared by the ``ingest`` sources: pure functions, no I/O.

* :class:`HttpInput`: the parts of an HTTP request a source reads, as plain data.
* :func:`parse_query`: a strict ``application/x-www-form-urlencoded`` parser
  (bad percent-encoding or invalid UTF-8 is a 400, never a 500).
* :func:`client_ip`: the browser's IP from ``X-Forwarded-For`` and the number of
  trusted proxy hops.
* ``_ga`` / ``_ga_<stream>`` cookies (GS1 and GS2 formats), click ids from the
  page URL and from first-party cookies (``_fbc``, ``_fbp``, ``_ttp``,
  ``_gcl_aw``, ...), and ``fbc`` built from ``fbclid``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from truecount.errors import InvalidPayload
from truecount.models.event import ClickIds

#: Click ids read from a landing-page URL (the ``dl`` / ``page_location``).
URL_CLICK_IDS: tuple[str, ...] = (
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "fbclid",
    "ttclid",
    "li_fat_id",
    "msclkid",
)

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CLICK_ID_MAX = 512
_GA_COOKIE = re.compile(r"^GA1\.\d+\.([^.\s]+\.[^.\s]+)$")
_GS1 = re.compile(r"^GS1\.\d+\.(\d+)\.(\d+)(?:\.|$)")
_GS2 = re.compile(r"^GS2\.\d+\.(.*)$")
_GCL = re.compile(r"^GCL\.\d+\.(.+)$")


@dataclass(frozen=True)
class HttpInput:
    """The parts of an HTTP request a source reads.

    Args:
        method: ``GET``, ``POST``, ...
        query: the raw query string, exactly as sent (still percent-encoded).
        body: the raw body bytes.
        headers: request headers, keys lower-cased.
        cookies: request cookies.
        remote_addr: the peer address of the connection.
    """

    method: str = "GET"
    query: bytes = b""
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    remote_addr: str | None = None

    def header(self, name: str) -> str | None:
        """A header value by case-insensitive name, or None."""
        return self.headers.get(name.lower())


def _bad_encoding(path: str, message: str) -> InvalidPayload:
    return InvalidPayload(
        f"malformed encoding at {path}",
        [{"path": path, "message": message}],
        "invalid_encoding",
    )


def _decode_component(raw: bytes, path: str) -> str:
    if b"%" in raw:
        if _BAD_PERCENT.search(raw):
            raise _bad_encoding(path, "malformed percent-encoding")
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    elif b"+" in raw:
        raw = raw.replace(b"+", b" ")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_encoding(path, "not valid UTF-8") from None


def _decode_value(raw: bytes, path: str, key: str) -> str:
    """Decode a value; the error path (``<path>.<key>``) is built only on error."""
    if b"%" not in raw and b"+" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    where = f"{path}.{key}" if path != "$query" and key else key or path
    return _decode_component(raw, where)


def parse_query(raw: bytes | str, path: str = "$query") -> list[tuple[str, str]]:
    """Parse a query string or form body strictly.

    ``+`` is a space, ``%XX`` a byte, and the decoded bytes must be UTF-8. Empty
    segments (``a=1&&b=2``) are skipped; a key without ``=`` has the value ``""``.

    Args:
        raw: the encoded text.
        path: the error path for this text (e.g. ``line[2]``).

    Returns:
        ``(key, value)`` pairs in order.

    Raises:
        InvalidPayload: malformed percent-encoding or invalid UTF-8 (400).
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    pairs: list[tuple[str, str]] = []
    for segment in data.split(b"&"):
        if not segment:
            continue
        raw_key, _, raw_value = segment.partition(b"=")
        key = _decode_component(raw_key, path)
        pairs.append((key, _decode_value(raw_value, path, key)))
    return pairs


def client_ip(
    remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int
) -> str | None:
    """The browser's IP address.

    Each trusted proxy appends the address it received the request from to
    ``X-Forwarded-For``, and the last one is the connection's peer. So with
    ``n`` trusted proxies the client is the ``n``-th entry from the right; with
    0, or when the header has fewer entries, it is the peer address.

    Args:
        remote_addr: the connection's peer address.
        forwarded_for: the ``X-Forwarded-For`` header, if any.
        trusted_proxies: our own proxy hops (``ingest.trusted_proxies``).

    Returns:
        A valid IPv4/IPv6 address, or None.
    """
    candidate = remote_addr
    if trusted_proxies > 0 and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if len(hops) >= trusted_proxies:
            candidate = hops[-trusted_proxies]
    return _valid_ip(candidate)


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_id_from_ga_cookie(value: str | None) -> str | None:
    """The GA client id in an ``_ga`` cookie (``GA1.1.<a>.<b>`` → ``<a>.<b>``).

    Args:
        value: the cookie value.

    Returns:
        ``<a>.<b>``, or None when the value is not a GA1 cookie.
    """
    if not value:
        return None
    match = _GA_COOKIE.match(value.strip())
    return match.group(1) if match else None


def session_from_ga_cookie(value: str | None) -> tuple[str | None, int | None]:
    """Session id and number from an ``_ga_<stream>`` cookie.

    Formats: ``GS1.1.<sid>.<sct>.<seg>.<ts>...`` and
    ``GS2.1.s<sid>$o<sct>$g<seg>$t<ts>...``.

    Args:
        value: the cookie value.

    Returns:
        ``(session_id, session_number)``, each None when absent.
    """
    if not value:
        return None, None
    text = value.strip()
    gs1 = _GS1.match(text)
    if gs1:
        return gs1.group(1), int(gs1.group(2))
    gs2 = _GS2.match(text)
    if not gs2:
        return None, None
    sid: str | None = None
    sct: int | None = None
    for part in gs2.group(1).split("$"):
        if part[:1] == "s" and part[1:].isdigit():
            sid = part[1:]
        elif part[:1] == "o" and part[1:].isdigit() and len(part) < 12:
            sct = int(part[1:])
    return sid, sct


def session_cookie(
    cookies: Mapping[str, str], measurement_id: str | None
) -> str | None:
    """The ``_ga_<stream>`` cookie value for a measurement id.

    Args:
        cookies: request cookies.
        measurement_id: e.g. ``G-ABC1234567`` (the cookie is ``_ga_ABC1234567``);
            None takes the only ``_ga_*`` cookie when there is exactly one.

    Returns:
        The cookie value, or None.
    """
    if measurement_id:
        stream = measurement_id.removeprefix("G-")
        return cookies.get(f"_ga_{stream}")
    found = [v for k, v in cookies.items() if k.startswith("_ga_")]
    return found[0] if len(found) == 1 else None


def url_params(url: str | None) -> dict[str, str]:
    """Query parameters of a page URL, leniently (the site owns that URL).

    Args:
        url: a page URL.

    Returns:
        The first value of each parameter.
    """
    if not url or "?" not in url:
        return {}
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False, errors="replace"):
        out.setdefault(key, value)
    return out


def _gcl_value(value: str | None) -> str | None:
    match = _GCL.match(value.strip()) if value else None
    return match.group(1) if match else None


def build_fbc(fbclid: str, received_at: datetime) -> str:
    """Build ``fbc`` from a landing-page ``fbclid`` (SPECS §3.3).

    Args:
        fbclid: the click id, copied exactly.
        received_at: when it was first seen.

    Returns:
        ``fb.1.<unix ms>.<fbclid>``.
    """
    return f"fb.1.{int(received_at.timestamp() * 1000)}.{fbclid}"


def click_ids(
    page_url: str | None,
    cookies: Mapping[str, str],
    received_at: datetime,
    explicit: Mapping[str, str] | None = None,
) -> ClickIds:
    """Collect click ids and browser ids.

    Precedence per id: ``explicit`` values (e.g. a data tag's fields), then the
    page URL (the newest click), then cookies. ``fbc`` comes from ``_fbc``
    unless the page URL carries another ``fbclid``, in which case it is built
    as ``fb.1.<received ms>.<fbclid>``. Values longer than 512 characters or
    with whitespace are dropped.

    Args:
        page_url: the page URL (``dl``, ``page_location``).
        cookies: first-party cookies (``_fbc``, ``_fbp``, ``_ttp``, ``_gcl_aw``,
            ``_gcl_gb``, ``ttclid``, ``li_fat_id``, ``_uetmsclkid``).
        received_at: when the request came in (for a built ``fbc``).
        explicit: click ids named directly (``gclid``, ``fbc``, ...).

    Returns:
        The click ids.
    """
    from_url = url_params(page_url)
    from_cookies = {
        "gclid": _gcl_value(cookies.get("_gcl_aw")),
        "gbraid": _gcl_value(cookies.get("_gcl_gb")),
        "fbc": cookies.get("_fbc"),
        "fbp": cookies.get("_fbp"),
        "ttp": cookies.get("_ttp"),
        "ttclid": cookies.get("ttclid"),
        "li_fat_id": cookies.get("li_fat_id"),
        "msclkid": (cookies.get("_uetmsclkid") or "").removeprefix("_uet") or None,
    }
    named = dict(explicit or {})
    values: dict[str, str] = {}
    for key in ClickIds.model_fields:
        for source in (named, from_url, from_cookies):
            value = _clean_id(source.get(key))
            if value is not None:
                values[key] = value
                break
    fbclid = _clean_id(named.get("fbclid")) or _clean_id(from_url.get("fbclid"))
    if fbclid and "fbc" not in named:
        current = values.get("fbc")
        if current is None or current.rsplit(".", 1)[-1] != fbclid:
            built = build_fbc(fbclid, received_at)
            if len(built) <= _CLICK_ID_MAX:
                values["fbc"] = built
    return ClickIds(**values)


def _clean_id(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if not text or len(text) > _CLICK_ID_MAX or any(c.isspace() for c in text):
        return None
    return text


def first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The first value of each key (later repeats are ignored)."""
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out
