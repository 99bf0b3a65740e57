"""A conversation document changed only through journal records, as the store's readers
replay them: for tests of what is derived from documents."""
from __future__ import annotations

from apsara.conversations.journal import Replay


class Journaled:
    def __init__(self):
        self.document = {"conversation": {"message_count": 0}, "messages": [], "active": {}, "seq": 0}
        self._seq = 0

    def apply(self, *records: dict) -> None:
        applier = Replay(self.document)
        for rec in records:
            self._seq += 1
            rec["seq"] = self._seq
            applier.apply(rec)
        applier.count_messages()
