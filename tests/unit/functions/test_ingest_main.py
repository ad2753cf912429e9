"""The ``ingest`` function end to end in-process (functions-framework test client).

Pub/Sub is replaced by a recording fake through the documented seam
``truecount.apps.ingest.override(publisher=..., clock=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import functions_framework
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from truecount.apps import ingest as ingest_app
from truecount.errors import PublishError
from truecount.models.event import Event

SOURCE = str(Path(__file__).resolve().parents[3] / "functions" / "ingest" / "main.py")
NOW = datetime(2024, 4, 5, 12, 0, tzinfo=UTC)
ORIGIN = "https://shop.example"
SECRET = "s3cr3t-mp"
GA4_QUERY = (
    "v=2&tid=G-ABC1234567&_p=1712345678901&cid=1234567890.1700000000&_s=1"
    "&en=purchase&cu=EUR&ep.transaction_id=T-1001&epn.value=21"
    "&pr1=idSKU123~nmBlue%20Shirt~pr10.5~qt2&gcs=G111"
)
CONFIG = f"""
[ingest]
cors_origins = ["{ORIGIN}"]
max_body_bytes = 2048
max_events_per_request = 3
"""


class FakePublisher:
    """Records what it is asked to publish; fails when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[Event] = []

    def publish(self, events: Sequence[Event]) -> list[str]:
        """Record the events, or raise PublishError."""
        if self.fail:
            raise PublishError("broker unavailable")
        self.published.extend(events)
        return [str(i) for i in range(len(events))]


@pytest.fixture
def publisher() -> FakePublisher:
    """A recording publisher."""
    return FakePublisher()


@pytest.fixture
def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, publisher: FakePublisher
) -> Iterator[Any]:
    """A test client of functions/ingest/main.py with a config, a secret and fakes."""
    config = tmp_path / "truecount.toml"
    config.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("TRUECOUNT_CONFIG", str(config))
    monkeypatch.setenv("TRUECOUNT_MP_API_SECRETS", f"old-secret, {SECRET}")
    app = functions_framework.create_app(target="ingest", source=SOURCE)
    with ingest_app.override(publisher=publisher, clock=lambda: NOW):
        yield app.test_client()


def test_ga4_get_hit_answers_204_and_publishes_the_keyed_event(
    client: Any, publisher: FakePublisher
) -> None:
    """A GA4 purchase hit is published with its dedup key and answered 204."""
    resp = client.get(f"/g/collect?{GA4_QUERY}")
    assert resp.status_code == 204
    assert resp.data == b""
    (event,) = publisher.published
    assert event.name == "purchase"
    assert event.dedup_key == "purchase:T-1001"
    assert event.received_at == NOW
    assert event.debug is False


def test_ga4_post_batch_publishes_every_line(
    client: Any, publisher: FakePublisher
) -> None:
    """A POST batch of 3 lines publishes 3 events in one request."""
    body = "en=page_view&_s=1\nen=scroll&_s=2\nen=click&_s=3"
    resp = client.post(
        "/g/collect?v=2&tid=G-ABC1234567&cid=1.2",
        data=body,
        content_type="text/plain;charset=UTF-8",
    )
    assert resp.status_code == 204
    assert [e.name for e in publisher.published] == ["page_view", "scroll", "click"]


def test_debug_header_answers_200_with_the_events_and_publishes_them_as_debug(
    client: Any, publisher: FakePublisher
) -> None:
    """X-Truecount-Debug: 1 answers 200 {"events": [...]} and marks them debug."""
    resp = client.get(f"/g/collect?{GA4_QUERY}", headers={"X-Truecount-Debug": "1"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["events"][0]["name"] == "purchase"
    assert body["events"][0]["debug"] is True
    assert body["events"][0]["commerce"]["value"] == "21"
    assert [e.debug for e in publisher.published] == [True]


def test_data_post_answers_200_with_accepted_ids(
    client: Any, publisher: FakePublisher
) -> None:
    """/data answers 200 JSON with the accepted event ids."""
    resp = client.post(
        "/data",
        json=[{"event_name": "page_view", "event_id": "e1"}, {"event_name": "sign_up"}],
    )
    assert resp.status_code == 200
    accepted = resp.get_json()["accepted"]
    assert accepted[0] == "e1"
    assert accepted == [e.event_id for e in publisher.published]


def test_data_get_with_dtcd(client: Any, publisher: FakePublisher) -> None:
    """GET /data?dtcd=<JSON> is accepted."""
    resp = client.get(
        "/data", query_string={"dtcd": json.dumps({"event_name": "page_view"})}
    )
    assert resp.status_code == 200
    assert [e.name for e in publisher.published] == ["page_view"]


def test_mp_with_a_valid_secret_answers_204(
    client: Any, publisher: FakePublisher
) -> None:
    """/mp/collect with a configured api_secret publishes and answers 204."""
    body = {
        "client_id": "1.2",
        "events": [
            {
                "name": "purchase",
                "params": {"transaction_id": "T9", "value": 5, "currency": "USD"},
            }
        ],
    }
    resp = client.post(f"/mp/collect?measurement_id=G-1&api_secret={SECRET}", json=body)
    assert resp.status_code == 204
    assert [e.dedup_key for e in publisher.published] == ["purchase:T9"]


@pytest.mark.parametrize("query", ["", "?api_secret=nope", "?api_secret="])
def test_mp_without_a_valid_secret_is_401_and_publishes_nothing(
    client: Any, publisher: FakePublisher, query: str
) -> None:
    """A missing or wrong api_secret answers 401 JSON and publishes nothing."""
    resp = client.post(
        f"/mp/collect{query}", json={"client_id": "1", "events": [{"name": "x"}]}
    )
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "unauthorized"
    assert publisher.published == []


def test_mp_refuses_everything_when_no_secret_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, publisher: FakePublisher
) -> None:
    """With no TRUECOUNT_MP_API_SECRETS, /mp/collect answers 401 to any request."""
    monkeypatch.delenv("TRUECOUNT_MP_API_SECRETS", raising=False)
    app = functions_framework.create_app(target="ingest", source=SOURCE)
    with ingest_app.override(publisher=publisher):
        resp = app.test_client().post("/mp/collect?api_secret=anything", json={})
    assert resp.status_code == 401
    assert publisher.published == []


def test_invalid_input_is_400_with_the_contract_error_and_nothing_published(
    client: Any, publisher: FakePublisher
) -> None:
    """One bad line rejects the whole request: 400 naming each field, no publish."""
    resp = client.post(
        "/g/collect?v=2&tid=G-1", data="en=ok\nen=1bad\nen=purchase&epn.value=5"
    )
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_payload"
    assert [f["path"] for f in error["fields"]] == ["line[1].en", "line[2].cu"]
    assert publisher.published == []


@pytest.mark.parametrize(
    "query",
    ["v=2&tid=G-1&en=x&dt=%zz", "v=2&tid=G-1&en=x&dt=%", "v=2&tid=G-1&en=%C3%28"],
)
def test_malformed_encoding_is_400_never_500(
    client: Any, publisher: FakePublisher, query: str
) -> None:
    """Bad percent-encoding or invalid UTF-8 answers 400."""
    resp = client.get(f"/g/collect?{query}")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_encoding"
    assert publisher.published == []


def test_unknown_route_is_404_and_wrong_method_405(client: Any) -> None:
    """Unknown paths answer 404; a wrong method 405 with Allow."""
    assert client.get("/nope").status_code == 404
    resp = client.put("/g/collect")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, OPTIONS, POST"
    assert client.get("/mp/collect").status_code == 405


def test_body_over_the_limit_is_413(client: Any, publisher: FakePublisher) -> None:
    """A body over ingest.max_body_bytes answers 413."""
    resp = client.post("/g/collect?v=2&tid=G-1", data="en=x&ep.a=" + "a" * 3000)
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"
    assert publisher.published == []


def test_too_many_events_is_413(client: Any, publisher: FakePublisher) -> None:
    """More events than ingest.max_events_per_request answers 413."""
    resp = client.post("/g/collect?v=2&tid=G-1", data="\n".join(["en=x"] * 4))
    assert resp.status_code == 413
    resp = client.post("/data", json=[{"event_name": "x"}] * 4)
    assert resp.status_code == 413
    assert publisher.published == []


def test_failed_publish_is_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Pub/Sub does not ack, the answer is 503 with Retry-After."""
    monkeypatch.setenv("TRUECOUNT_MP_API_SECRETS", SECRET)
    app = functions_framework.create_app(target="ingest", source=SOURCE)
    with ingest_app.override(publisher=FakePublisher(fail=True)):
        resp = app.test_client().get(f"/g/collect?{GA4_QUERY}")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.get_json()["error"]["code"] == "unavailable"


def test_allowed_origin_gets_credentialed_cors(client: Any) -> None:
    """An allow-listed Origin is echoed with credentials and Vary: Origin."""
    resp = client.get(f"/g/collect?{GA4_QUERY}", headers={"Origin": ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Vary"] == "Origin"


def test_other_origin_gets_no_cors_headers(client: Any) -> None:
    """An Origin not in the list gets no CORS headers (the request still counts)."""
    resp = client.get(
        f"/g/collect?{GA4_QUERY}", headers={"Origin": "https://evil.example"}
    )
    assert resp.status_code == 204
    assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize("path", ["/g/collect", "/data", "/mp/collect"])
def test_preflight_on_each_route(
    client: Any, publisher: FakePublisher, path: str
) -> None:
    """OPTIONS answers 204 with methods and headers (incl. X-Truecount-Debug)."""
    resp = client.options(
        path,
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    assert "X-Truecount-Debug" in resp.headers["Access-Control-Allow-Headers"]
    refused = client.options(path, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 204
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Methods" not in refused.headers
    assert publisher.published == []


def test_healthz(client: Any) -> None:
    """GET /healthz answers 200 ok."""
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_client_ip_uses_x_forwarded_for_with_one_trusted_hop(
    client: Any, publisher: FakePublisher
) -> None:
    """With the default one trusted proxy, the last X-Forwarded-For hop is the client."""
    client.get(
        f"/g/collect?{GA4_QUERY}",
        headers={"X-Forwarded-For": "1.1.1.1, 198.51.100.23", "User-Agent": "UA/9"},
    )
    (event,) = publisher.published
    assert (event.client.ip, event.client.user_agent) == ("198.51.100.23", "UA/9")


# --- property test ------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
_query_piece = st.one_of(
    st.sampled_from(
        [
            "v=2",
            "tid=G-X",
            "en=page_view",
            "en=purchase",
            "cu=EUR",
            "cu=zz",
            "epn.value=1.5",
            "epn.value=x",
            "pr1=idA~pr1~qt2",
            "pr2=~~~",
            "gcs=G1-1",
            "gcd=13l3",
            "%",
            "%zz",
            "%C3%28",
            "dl=http%3A%2F%2Fa%3Fgclid%3D1",
            "ep.event_id=",
            "sid=abc",
            "sct=-1",
            "_et=1e999",
            "uid=a%40b.co",
            "api_secret=" + SECRET,
            "dtdc=e30",
            "dtcd=%7B%7D",
            "event_name=x",
        ]
    ),
    _text.map(lambda s: s.replace("&", "")),
)
_queries = st.lists(_query_piece, max_size=8).map("&".join)
_claimed = _queries.map(lambda q: "v=2&tid=G-X&en=page_view&" + q)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(_queries, max_size=5).map(lambda lines: "\n".join(lines).encode()),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "event_name",
                        "name",
                        "events",
                        "client_id",
                        "items",
                        "value",
                        "currency",
                        "params",
                        "user_data",
                        "x",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    ).map(lambda value: json.dumps(value).encode()),
)
_cookie_value = st.text(
    alphabet=st.characters(
        min_codepoint=33, max_codepoint=126, exclude_characters=';,"\\'
    ),
    max_size=30,
)
_cookies = st.dictionaries(
    st.sampled_from(["_ga", "_ga_X", "_fbc", "_fbp", "_gcl_aw", "_ttp", "ttclid"]),
    _cookie_value,
    max_size=4,
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "X-Forwarded-For": st.text(alphabet="0123456789.:, abcdef", max_size=40),
        "User-Agent": _cookie_value,
        "Origin": st.sampled_from([ORIGIN, "https://evil.example", "null"]),
        "X-Truecount-Debug": st.sampled_from(["1", "0"]),
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded"]
        ),
    },
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(["/g/collect", "/data", "/mp/collect", "/healthz", "/x"]),
    method=st.sampled_from(["GET", "POST", "OPTIONS", "PUT"]),
    query=st.one_of(_queries, _claimed),
    body=_bodies,
    cookies=_cookies,
    headers=_headers,
)
def test_random_requests_never_5xx_and_4xx_never_publish(
    client: Any,
    publisher: FakePublisher,
    *,
    path: str,
    method: str,
    query: str,
    body: bytes,
    cookies: dict[str, str],
    headers: dict[str, str],
) -> None:
    """Random query strings, bodies, cookies and headers never give a 5xx; a 4xx publishes nothing."""
    publisher.published.clear()
    cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    all_headers = {**headers, **({"Cookie": cookie_header} if cookie_header else {})}
    resp = client.open(
        path, method=method, query_string=query, data=body, headers=all_headers
    )
    event(f"status {resp.status_code}")
    assert resp.status_code < 500
    if resp.status_code >= 400:
        assert publisher.published == []
        assert "error" in resp.get_json()


def test_origins_from_terraform_env_are_added_to_the_config_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRUECOUNT_CORS_ALLOWED_ORIGINS (set by Terraform) extends cors_origins."""
    from flask import Flask

    from truecount.apps.ingest import create_app

    config = tmp_path / "cors.toml"
    config.write_text('[ingest]\ncors_origins = ["https://a.example"]\n')
    monkeypatch.setenv("TRUECOUNT_CONFIG", str(config))
    app = create_app({"TRUECOUNT_CORS_ALLOWED_ORIGINS": " https://b.example ,"})

    answers = {}
    for origin in ("https://a.example", "https://b.example", "https://c.example"):
        with Flask(__name__).test_request_context(headers={"Origin": origin}):
            from flask import request

            answers[origin] = app.cors(request).get("Access-Control-Allow-Origin")

    assert answers == {
        "https://a.example": "https://a.example",
        "https://b.example": "https://b.example",
        "https://c.example": None,
    }


HIDDEN = quote("Jane.Doe+shop@Example.com", safe="")
HIDDEN_CASES = {
    "transaction id": (
        "",
        f"en=purchase&cu=EUR&epn.value=1&ep.transaction_id={HIDDEN}",
        {},
    ),
    "page URL": (
        f"&dl={quote(f'https://shop.example/?u={HIDDEN}', safe='')}",
        "en=page_view",
        {},
    ),
    "twice-encoded page URL": (
        "&dl=https%3A%2F%2Fs.example%2F%3Fu%3Djane%2540x.io",
        "en=page_view",
        {},
    ),
    "item name": (
        "",
        f"en=purchase&cu=EUR&epn.value=1&ep.transaction_id=T9&pr1=idA~nm{HIDDEN}",
        {},
    ),
    "user id": (f"&uid={HIDDEN}", "en=page_view", {}),
    "cookie": ("", "en=page_view", {"_fbp": "fb.1.1.jane.doe@example.com"}),
    "coupon": (
        "",
        f"en=purchase&cu=EUR&epn.value=1&ep.transaction_id=T8&ep.coupon={HIDDEN}",
        {},
    ),
}


@pytest.mark.parametrize("where", list(HIDDEN_CASES))
def test_no_raw_email_reaches_pub_sub_whatever_field_hides_it(
    client: Any, publisher: FakePublisher, where: str
) -> None:
    """An address a site put anywhere is replaced before publishing, and hashed
    into identity; the published bytes hold no '@'."""
    query, body, cookies = HIDDEN_CASES[where]
    for name, value in cookies.items():
        client.set_cookie(name, value)

    resp = client.post(f"/g/collect?{GA4_QUERY}{query}", data=body)

    assert resp.status_code == 204, (where, resp.get_json())
    assert len(publisher.published) == 1
    event = publisher.published[0]
    wire = event.to_json_bytes().decode()
    assert "@" not in wire, where
    assert "%40" not in wire.lower(), where
    assert event.identity.email_sha256 is not None
    assert "@" not in event.dedup_key


def test_huge_user_agent_and_title_are_clipped_not_rejected(
    client: Any, publisher: FakePublisher
) -> None:
    """A 5,000-character user agent and a 1,500-character title still count; they
    are cut to the contract's lengths (1024 each) instead of failing the hit."""
    resp = client.post(
        f"/g/collect?{GA4_QUERY}",
        data=f"en=page_view&dt={'T' * 1500}",
        headers={"User-Agent": "Mozilla/5.0 " + "x" * 5000},
    )

    assert resp.status_code == 204, resp.get_json()
    event = publisher.published[0]
    assert event.client.user_agent is not None
    assert len(event.client.user_agent) == 1024
    assert event.client.user_agent.startswith("Mozilla/5.0 x")
    assert event.page is not None
    assert event.page.title == "T" * 1024
