"""Which format an uploaded export is in, and its conversations read out of it."""
from __future__ import annotations

from dataclasses import dataclass

from . import Imported, UnknownFormat, apsara_format, chatgpt, openwebui
from .common import RefusedValue


@dataclass
class ImportBatch:
    format: str
    conversations: list[Imported]
    skipped_conversations: int

    @property
    def skipped_messages(self) -> int:
        return sum(c.skipped_messages for c in self.conversations)


# Messages one imported conversation may hold: far past any real chat (the longest ChatGPT
# conversations run to a few thousand), and a worker reads a conversation whole before its
# next turn (a 120,000-message one made that first turn take seconds, stalling the worker).
MAX_MESSAGES = 10_000


class InvalidExport(ValueError):
    def __init__(self, problems: dict):
        super().__init__("the export is not valid")
        self.problems = problems


def _check_size(batch: "ImportBatch", listed: bool) -> "ImportBatch":
    for n, imported in enumerate(batch.conversations):
        if len(imported.messages) > MAX_MESSAGES:
            path = f"{n}.messages" if listed else "messages"
            raise InvalidExport({path: [f"{len(imported.messages)} messages: at most {MAX_MESSAGES} "
                                        "a conversation"]})
    return batch


def read_export(document) -> ImportBatch:
    """All or nothing: an Apsara export with any invalid entry is refused whole;
    in another app's export an entry with nothing a user saw is skipped and counted, and
    one with a value that cannot be stored (a time out of range) refuses the whole file."""
    if apsara_format.detect(document):
        entries = document if isinstance(document, list) else [document]
        conversations = []
        for n, entry in enumerate(entries):
            imported, problems = apsara_format.convert(entry)
            if imported is None:
                prefix = f"{n}." if isinstance(document, list) else ""
                raise InvalidExport({f"{prefix}{path}": messages for path, messages in problems.items()})
            conversations.append(imported)
        return _check_size(ImportBatch("apsara", conversations, 0), isinstance(document, list))
    for name, module in (("chatgpt", chatgpt), ("openwebui", openwebui)):
        if module.detect(document):
            converted = [_converted(module, n, entry) for n, entry in enumerate(document)]
            kept = [c for c in converted if c is not None]
            return _check_size(ImportBatch(name, kept, len(converted) - len(kept)), True)
    raise UnknownFormat("not an Apsara, ChatGPT or Open WebUI export")


def _converted(module, n: int, entry) -> Imported | None:
    try:
        return module.convert(entry)
    except RefusedValue as refused:
        raise InvalidExport({refused.under(str(n)).path: [refused.message]}) from None
