"""What the Responses routes share: the store, the background runs, request preparation.

:meth:`ResponsesDoor.prepare` turns a request body into the conversation to plan: it loads the
``previous_response_id`` chain and ``item_reference`` targets from the store (only the key's
own responses are visible), translates, and keeps what a stored response needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config import KeySettings, Settings
from gateway.engine.planning import Plan, plan_conversation
from gateway.errors import BadRequest, GatewayError, NotFound, ServiceUnavailable
from gateway.http.bodies import validate
from gateway.openai.responses.background import Background
from gateway.openai.responses.render import response_object, stored_items
from gateway.openai.responses.run import TERMINAL, ResponseRun
from gateway.openai.responses.store import ResponseStore, StoredResponse
from gateway.openai.responses.translate import Translated, input_items, references, translate
from gateway.openai.responses.wire import CreateResponse

if TYPE_CHECKING:
    from gateway.engine.catalog import ModelCatalog
    from gateway.runtime import Runtime

logger = logging.getLogger("gateway.responses")


@dataclass(slots=True)
class Prepared:
    request: CreateResponse
    translated: Translated
    history: list[dict[str, Any]]  # the previous chain's items
    inputs: list[dict[str, Any]]  # this input, references resolved, as stored


class ResponsesDoor:
    """Owned by the runtime: opened at start-up, closed at shutdown."""

    def __init__(self, settings: Settings) -> None:
        options = settings.responses
        self.store = ResponseStore(options.store_url or settings.ledger.url, options.table)
        self.retention = options.retention_hours * 3600
        self.background = Background(self.store, options.background_lease_seconds, self._replan)
        self._catalog: ModelCatalog | None = None
        self._runtime: Runtime | None = None
        self._open = False
        self._max_items = settings.limits.max_messages
        self._saving: set[asyncio.Task[None]] = set()

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        try:
            await self.store.open()
            self._open = True
        except Exception:
            logger.exception("the response store could not be opened; retrying on first use")
        self.background.start(runtime)

    async def aclose(self) -> None:
        await self.background.aclose()
        await self.store.close()

    async def ready_store(self) -> ResponseStore:
        """The open store, or a 503 saying it is unreachable."""
        if not self._open:
            try:
                await self.store.open()
                self._open = True
            except Exception:
                logger.exception("the response store could not be opened")
                raise ServiceUnavailable(
                    "Stored responses are unavailable: the gateway cannot reach its database.",
                    code="store_unavailable",
                ) from None
        return self.store

    # ------------------------------------------------------------------ reading

    async def find(self, response_id: str, key: KeySettings) -> StoredResponse:
        """A stored response of this key, with a local background run's latest state."""
        store = await self.ready_store()
        known = storable_id(response_id)
        record = await store.get(response_id, key.name, time.time()) if known else None
        if record is None:
            raise NotFound(
                f"No response with id {response_id!r} found.",
                param="response_id",
                code="not_found",
            )
        follower = self.background.followers.get(response_id)
        if follower is not None:
            record.body = follower.run.snapshot()
            record.status = follower.run.status
        return record

    async def prepare(self, data: dict[str, Any], key: KeySettings) -> Prepared:
        request = validate(CreateResponse, data)
        if request.background and not request.store:
            raise BadRequest("background responses must be stored (store: true).", param="store")
        history: list[dict[str, Any]] = []
        if request.previous_response_id is not None:
            history = await self._chain(request.previous_response_id, key)
        items = input_items(request)
        if len(items) > self._max_items:  # before any lookup: each reference is a query
            raise BadRequest(f"At most {self._max_items} input items are allowed.", param="input")
        refs = [ref for ref in references(items) if storable_id(ref)]  # the others: not found
        resolved = await (await self.ready_store()).find_items(refs, key.name) if refs else {}
        translated = translate(request, history, items, resolved)
        inputs = stored_items([_resolve(item, resolved) for item in items])
        return Prepared(request, translated, history, inputs)

    async def _chain(self, previous: str, key: KeySettings) -> list[dict[str, Any]]:
        store = await self.ready_store()
        known = storable_id(previous)
        record = await store.get(previous, key.name, time.time()) if known else None
        if record is None:
            raise NotFound(
                f"Previous response with id {previous!r} not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if record.status not in TERMINAL:
            raise BadRequest(
                f"Previous response '{previous}' is still {record.status}; wait until it ends.",
                param="previous_response_id",
            )
        inputs = await store.items(previous, role="input")
        return [*record.history, *inputs, *_outputs(record.body)]

    # ------------------------------------------------------------------ writing

    def record(self, prepared: Prepared, obj: dict[str, Any], key: KeySettings) -> StoredResponse:
        now = time.time()
        data = prepared.request.model_dump(exclude_none=True)
        data["input"] = prepared.inputs  # references resolved: a restart needs no lookups
        data.pop("previous_response_id", None)
        return StoredResponse(
            id=str(obj["id"]),
            key_name=key.name,
            created_at=now,
            expires_at=now + self.retention,
            status=str(obj["status"]),
            background=prepared.request.background,
            body=obj,
            history=prepared.history,
            request=data,
        )

    async def save(self, record: StoredResponse, prepared: Prepared) -> None:
        """Store a finished foreground response; a database failure loses only the copy."""
        try:
            await (await self.ready_store()).put(record, prepared.inputs)
        except GatewayError:
            pass
        except Exception:
            logger.exception("could not store response %s", record.id)

    def save_later(self, record: StoredResponse, prepared: Prepared) -> None:
        """Store a response from code that cannot wait (a stream's failure frame)."""
        if not prepared.request.store:
            return
        task = asyncio.create_task(self.save(record, prepared))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    def _replan(self, record: StoredResponse, key: KeySettings) -> tuple[Plan, ResponseRun]:
        runtime = self._runtime
        assert runtime is not None
        if not record.job_ids:
            raise BadRequest("This background response's job was never submitted.")
        request = CreateResponse.model_validate(record.request)
        translated = translate(request, record.history, input_items(request), {})
        translated.conversation.stream = True
        plan = plan_conversation(translated.conversation, runtime.catalog, runtime.settings.limits)
        return plan, ResponseRun.restore(record.body, record.seq, translated.namespaces)


def new_object(prepared: Prepared, model: str, status: str) -> dict[str, Any]:
    return response_object(prepared.request, prepared.translated, model, status=status)


def storable_id(value: str) -> bool:
    """Could ``value`` be the id of something stored? A NUL (which PostgreSQL text refuses),
    a lone surrogate or a kilobyte of id never is: not found, without asking the database."""
    if len(value) > 256 or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _resolve(item: Any, resolved: dict[str, dict[str, Any]]) -> Any:
    if isinstance(item, dict) and item.get("type") == "item_reference":
        return resolved.get(str(item.get("id")), item)
    return item


def _outputs(obj: dict[str, Any]) -> Sequence[dict[str, Any]]:
    output: list[dict[str, Any]] = obj.get("output") or []
    return output
