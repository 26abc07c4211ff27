"""schemathesis against the live app's own `/api/openapi.json` (issue #13): for every documented
operation, a bounded, derandomized set of generated requests is sent over loopback HTTP with
an API key of every scope, and each answer must be no 5xx, a documented status, a documented
content type, and a body inside the documented schema.

The app runs on the test's event loop (aiohttp's test server on 127.0.0.1); schemathesis is
synchronous (requests), so it runs in a worker thread. Nothing leaves the machine: every
request goes to the base URL of that server. The rate limit is off (a 429 would hide what is
behind it) and the run is reproducible: `derandomize`, no example database.
"""

from __future__ import annotations

import asyncio
import dataclasses

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)  # fmt: skip

from license_server.app import create_app
from license_server.appkeys import RUNTIME
from license_server.licensing.actors import CLI
from license_server.licensing.specs import LicenseSpec
from tests.api_helpers import make_key
from tests.conftest import PRODUCT, with_sections

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # report the first failing example, unshrunk
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


# Invalid requests (negative mode) must also be refused with a documented 4xx.
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]


@dataclasses.dataclass
class Outcome:
    label: str
    mode: GenerationMode
    examples: int = 0
    failure: str | None = None


def _run(schema, base_url: str, headers: dict[str, str]) -> list[Outcome]:
    return [
        _run_operation(result.ok(), mode, base_url, headers)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for result in schema.get_all_operations()
    ]


def _run_operation(operation, mode, base_url: str, headers: dict[str, str]) -> Outcome:
    outcome = Outcome(operation.label, mode)
    checks = CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS

    @SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        outcome.examples += 1
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)

    try:
        check()
    except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        outcome.examples = -1
    except (Exception, BaseExceptionGroup) as exc:  # one operation's must not hide the rest
        outcome.failure = f"{type(exc).__name__}: {exc}"[:3000]
    return outcome


async def test_every_operation_answers_inside_its_documented_schema(aiohttp_client, settings):
    app = create_app(with_sections(settings, rate_limit={"enabled": False}))
    client = await aiohttp_client(app)
    _, headers = await make_key(client, ("*",))
    service = app[RUNTIME].licenses
    await service.create_product(PRODUCT, actor=CLI)
    license, _ = await service.issue(
        LicenseSpec(product="mymod", licensee="Smith", email="ops@smith.example"), actor=CLI
    )
    document = await (await client.get("/api/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    base_url = str(client.make_url("")).rstrip("/")

    outcomes = await asyncio.to_thread(_run, schema, base_url, headers)

    summary = "\n".join(
        f"{o.mode.value} {o.label}: "
        + ("nothing to make invalid, " if o.examples == -1 else f"{o.examples} examples, ")
        + ("FAILED" if o.failure else "ok")
        for o in outcomes
    )
    print(f"schemathesis: {len(outcomes)} operations\n{summary}")
    failures = [f"{o.label}\n{o.failure}" for o in outcomes if o.failure]
    assert not failures, "\n\n".join(failures)
    assert len(outcomes) >= 30 and all(o.examples >= 1 or o.examples == -1 for o in outcomes)
    assert all(o.examples >= 1 for o in outcomes if o.mode is GenerationMode.POSITIVE)
    assert (await service.license_by_id(license.id)).id == license.id
