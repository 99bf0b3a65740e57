"""A bounded schemathesis run against the served OpenAPI document.

Every operation is fuzzed with data generated from the document (valid and
invalid), as user alice, and every answer is checked against the document:
status codes, content types, response schemas, no 5xx, auth required. After
each answer that gave alice an object, the same request is sent with bob's key
and must be 404 (object-level authorization). A stateful run then chains
operations through the links schemathesis infers (create a conversation, send
to it, edit, regenerate, select...). Fixed seed (derandomized), small budget.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ensure_resource_availability, positive_data_acceptance

from apsara import create_app
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
ALICE = {"Authorization": "Bearer key-a"}
BOB = {"Authorization": "Bearer key-b"}
EXAMPLES_PER_OPERATION = 40
STATEFUL_SCENARIOS = 60
FUZZ = settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


class FreshApp:
    """The app under test, made anew (with an empty data folder) whenever `reset()` is called,
    so every stateful scenario starts from the same state (Hypothesis replays them)."""

    def __init__(self, tmp_path, fake_url):
        self._tmp_path, self._fake_url, self._runs = tmp_path, fake_url, 0
        self.reset()

    def reset(self) -> None:
        self._runs += 1
        self.app = create_app(make_settings(self._tmp_path / f"run-{self._runs}",
                                            api_keys={"alice": "key-a", "bob": "key-b"},
                                            gemini_api_key="test-key-123", gemini_base_url=self._fake_url,
                                            ping_interval_s=0.2))

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@pytest.fixture
def fuzzed_app(tmp_path, fake):
    return FreshApp(tmp_path, fake.url)


@pytest.fixture
def api_schema(fuzzed_app):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzzed_app)

    @schema.auth()
    class AsAlice:
        """Every generated request carries alice's key (the auth checks then try without it)."""

        def get(self, case, context):
            return ALICE["Authorization"]

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), "Authorization": data}

    return schema


# Not checked: whether every schema-valid body is accepted (validity here also depends on
# state the document cannot hold: which models the live list offers, which tools and
# thinking settings a model takes; those refusals are the documented 422s); and whether a
# 404 right after a create means the created object is gone (a send naming an unknown
# file is 404 by contract, which that check reads as the conversation missing).
NOT_CHECKED = [positive_data_acceptance, ensure_resource_availability]


# (method, path template) -> statuses answered, for the coverage figures and assertions.
ANSWERED: dict[tuple[str, str], set[int]] = {}


def others_get_404(ctx, response, case):
    """What alice reached by id, bob must not: the same request with his key is 404."""
    ANSWERED.setdefault((case.method, case.path), set()).add(response.status_code)
    if response.status_code >= 300 or not case.path_parameters:
        return None
    other = case.call(headers=BOB)
    if other.status_code != 404:
        raise AssertionError(f"bob got {other.status_code} for alice's {case.method} {case.formatted_path}")
    return None


def test_every_operation_keeps_to_the_document(api_schema):
    # Each operation and mode as its own Hypothesis run (schemathesis' pytest plugin
    # does the same, but its lazy fixture loader does not work with this pytest).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 18
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                case.call_and_validate(additional_checks=[others_get_404], excluded_checks=NOT_CHECKED)

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): only positive cases exist.
                assert mode is GenerationMode.NEGATIVE, operation.label


def test_stateful_sequences_keep_to_the_document(api_schema, fuzzed_app):
    class Sequences(api_schema.as_state_machine()):
        def setup(self):
            fuzzed_app.reset()

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, additional_checks=[others_get_404], excluded_checks=NOT_CHECKED,
                                   transport_kwargs=kwargs or None, recorder=getattr(self, "recorder", None))

    ANSWERED.clear()
    Sequences.run(settings=settings(FUZZ, max_examples=STATEFUL_SCENARIOS, stateful_step_count=8))
    # The inferred links chained real sequences: objects were made and then used by id.
    reached = {key for key, statuses in ANSWERED.items() if any(200 <= s < 300 for s in statuses)}
    assert {("POST", "/api/v1/conversations"), ("POST", "/api/v1/files")} <= reached, sorted(reached)
    for family in ("/api/v1/conversations/{conversation_id}", "/api/v1/files/{file_id}"):
        assert any(path.startswith(family) for _, path in reached), (family, sorted(reached))
