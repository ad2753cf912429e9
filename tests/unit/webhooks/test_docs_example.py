"""The CRM signing example in docs/webhooks.md produces valid signatures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from truecount.webhooks.signatures import crm_signature_header, verify_crm

DOC = Path(__file__).parents[3] / "docs" / "webhooks.md"


def _python_example() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    [source] = [b for b in blocks if "def truecount_headers" in b]
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 (our own doc)
    return namespace


def test_documented_python_signer_is_accepted_by_the_verifier() -> None:
    """Headers from the doc's truecount_headers verify with the route's verifier."""
    headers_for = _python_example()["truecount_headers"]
    body = b'{"name":"qualify_lead","event_id":"crm-1"}'
    headers = headers_for(body, "ops", "s3cret", 1700000000)
    assert headers["Truecount-Key-Id"] == "ops"
    assert headers["Truecount-Signature"] == crm_signature_header(
        body, "s3cret", 1700000000
    )
    assert (
        verify_crm(
            body,
            headers["Truecount-Signature"],
            key_id=headers["Truecount-Key-Id"],
            keys={"ops": "s3cret"},
            now=1700000010,
        )
        == 1700000000
    )
