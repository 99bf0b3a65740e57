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


class InvalidExport(ValueError):
    def __init__(self, problems: dict):
        super().__init__("the export is not valid")
        self.problems = problems


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
        return ImportBatch("apsara", conversations, 0)
    for name, module in (("chatgpt", chatgpt), ("openwebui", openwebui)):
        if module.detect(document):
            converted = [_converted(module, n, entry) for n, entry in enumerate(document)]
            kept = [c for c in converted if c is not None]
            return ImportBatch(name, kept, len(converted) - len(kept))
    raise UnknownFormat("not an Apsara, ChatGPT or Open WebUI export")


def _converted(module, n: int, entry) -> Imported | None:
    try:
        return module.convert(entry)
    except RefusedValue as refused:
        raise InvalidExport({refused.under(str(n)).path: [refused.message]}) from None
