"""What the Responses routes share: the store, the background runs, request preparation.

:meth:`ResponsesDoor.prepare` turns a request body into the conversation to plan: it loads the
``previous_response_id`` chain and ``item_reference`` targets from the store (only the key's
own responses are visible), translates, and keeps what a stored response needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.config import KeySettings, Settings
from gateway.db import Databases
from gateway.engine.planning import Plan, plan_conversation
from gateway.errors import BadRequest, GatewayError, NotFound, ServiceUnavailable
from gateway.http.bodies import validate
from gateway.keys.digests import owner
from gateway.openai.responses.background import Background
from gateway.openai.responses.render import response_object, stored_items
from gateway.openai.responses.rows import Dumped, dumps, stored_len
from gateway.openai.responses.run import TERMINAL, ResponseRun
from gateway.openai.responses.store import ResponseStore, StoredResponse, StoreUnavailable
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
    history: list[dict[str, Any]]  # the previous chain's items (read, never stored again)
    inputs: list[dict[str, Any]]  # this input, references resolved, as stored
    chain: list[str] = field(default_factory=list)  # the ids that history comes from
    stored_request: dict[str, Any] | None = None  # the request as stored, made once (_request)
    dumped: Dumped | None = None  # its text and the inputs', once counted (_check_size)


class ResponsesDoor:
    """Owned by the app (``app.state.responses``): opened at start-up, closed at shutdown."""

    def __init__(self, settings: Settings, databases: Databases | None = None) -> None:
        options = settings.responses
        self.store = ResponseStore(
            options.store_url or settings.ledger.url,
            options.table,
            databases or Databases(timeout=settings.ledger.db_timeout_seconds),
        )
        self.caps = options
        self.retention = options.retention_hours * 3600
        self.background = Background(
            self.store,
            options.background_lease_seconds,
            self._replan,
            submit_seconds=settings.limits.max_deadline,
        )
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
        except Exception as exc:  # the database is down: one line, not a traceback
            logger.warning(
                "the response store could not be opened (%s: %s); retrying on first use",
                type(exc).__name__,
                str(exc).strip() or "no detail",
            )
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
                raise StoreUnavailable() from None
        return self.store

    # ------------------------------------------------------------------ reading

    async def find(self, response_id: str, key: KeySettings) -> StoredResponse:
        """A stored response of this key, with a local background run's latest state."""
        store = await self.ready_store()
        known = storable_id(response_id)
        record = await store.get(response_id, owner(key), time.time()) if known else None
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
        items = input_items(request)
        if len(items) > self._max_items:  # before any lookup: each reference is a query
            raise BadRequest(f"At most {self._max_items} input items are allowed.", param="input")
        history: list[dict[str, Any]] = []
        chain: list[str] = []
        if request.previous_response_id is not None:
            history, chain = await self._chain(request.previous_response_id, key)
        refs = [ref for ref in references(items) if storable_id(ref)]  # the others: not found
        resolved = await (await self.ready_store()).find_items(refs, owner(key)) if refs else {}
        translated = translate(request, history, items, resolved)
        # Only a stored response keeps its input items (with ids given here).
        inputs = stored_items([_resolve(i, resolved) for i in items]) if request.store else []
        prepared = Prepared(request, translated, history, inputs, chain)
        if request.store:
            await self._check_size(prepared, key)
        return prepared

    async def _check_size(self, prepared: Prepared, key: KeySettings) -> None:
        """What will be stored is what is counted: every field of every item, and the request.
        Refused before anything runs: 400 for one too-large item or response, and 400
        ``storage_quota_exceeded`` for a key whose stored responses are at its cap."""
        caps = self.caps
        request = dumps(_request(prepared))
        texts = [dumps(item) for item in prepared.inputs]
        prepared.dumped = Dumped(request, texts)
        size = stored_len(request)
        for i, text in enumerate(texts):
            length = stored_len(text)
            if length > caps.max_item_bytes:
                raise BadRequest(
                    f"Input item {i} is {length} bytes stored; at most {caps.max_item_bytes} "
                    "bytes per item are stored.",
                    param="input",
                    code="item_too_large",
                )
            size += length
        if size > caps.max_response_bytes:
            raise BadRequest(
                f"This response would store {size} bytes; at most {caps.max_response_bytes} "
                "bytes per response are stored (send it with store: false, or shorter).",
                param="input",
                code="response_too_large",
            )
        store = await self.ready_store()
        used = await store.quota_used(owner(key), time.time(), size, caps.max_key_bytes)
        if used + size > caps.max_key_bytes:
            raise BadRequest(
                f"This key stores {used} bytes of responses; {size} more would pass its cap of "
                f"{caps.max_key_bytes}. Delete stored responses, or send with store: false.",
                param="store",
                code="storage_quota_exceeded",
            )

    async def _chain(
        self, previous: str, key: KeySettings
    ) -> tuple[list[dict[str, Any]], list[str]]:
        store = await self.ready_store()
        known = storable_id(previous)
        record = await store.get(previous, owner(key), time.time()) if known else None
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
        return await store.chain(previous, owner(key))

    # ------------------------------------------------------------------ writing

    def record(
        self,
        prepared: Prepared,
        obj: dict[str, Any],
        key: KeySettings,
        request_id: str | None = None,
    ) -> StoredResponse:
        now = time.time()
        return StoredResponse(
            id=str(obj["id"]),
            key_id=owner(key),
            key_name=key.name,
            created_at=now,
            expires_at=now + self.retention,
            status=str(obj["status"]),
            background=prepared.request.background,
            body=obj,
            request=_request(prepared),
            previous_id=prepared.chain[0] if prepared.chain else None,
            request_id=request_id,
        )

    async def save(self, record: StoredResponse, prepared: Prepared) -> None:
        """Store a finished foreground response; a database failure loses only the copy."""
        try:
            store = await self.ready_store()
            await store.put(record, prepared.inputs, chain=prepared.chain, dumped=prepared.dumped)
        except GatewayError as exc:  # the database is away: the answer went out, the copy not
            logger.warning("could not store response %s: %s", record.id, exc)
        except Exception:
            logger.exception("could not store response %s", record.id)

    def save_later(self, record: StoredResponse, prepared: Prepared) -> None:
        """Store a response from code that cannot wait (a stream's failure frame)."""
        if not prepared.request.store:
            return
        task = asyncio.create_task(self.save(record, prepared))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _replan(self, record: StoredResponse, key: KeySettings) -> tuple[Plan, ResponseRun]:
        runtime = self._runtime
        assert runtime is not None
        if record.status == "submitting":
            # Stopped between storing the run and storing its job ids: the job may or may not
            # have reached the service, and nothing can tell which. It is not submitted again
            # (it could run twice); the client never had its 200 for it.
            raise ServiceUnavailable(
                "The gateway stopped while submitting this response; it was not submitted "
                "again, so that it cannot run twice. Create it again.",
                code="submission_interrupted",
            )
        if not record.job_ids:
            raise BadRequest("This background response's job was never submitted.")
        data = dict(record.request)
        if "input" not in data:  # stored once, as items (older rows kept a copy)
            data["input"] = await self.store.items(record.id, role="input")
        history: list[dict[str, Any]] = []
        if record.previous_id is not None:
            history, _ = await self.store.chain(record.previous_id, record.key_id)
        request = CreateResponse.model_validate(data)
        translated = translate(request, history, input_items(request), {})
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


def _request(prepared: Prepared) -> dict[str, Any]:
    """The request as stored, to plan it again: its input lives in the items, once. Made
    once per request (counted before it runs, stored when it ends)."""
    if prepared.stored_request is None:
        data = prepared.request.model_dump(exclude_none=True)
        data.pop("input", None)
        data.pop("previous_response_id", None)  # the row's previous_id
        prepared.stored_request = data
    return prepared.stored_request
