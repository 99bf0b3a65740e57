"""Which conversations a listing or a search shows: the archived, pinned and temporary flags.

A flag asked for (`?archived=true`) shows only conversations that have it; the
default view leaves archived and temporary conversations out and shows pinned
ones among the rest. Every store applies the same rule (the file store on
headers and in its search index; a database in its WHERE clause).
"""
from __future__ import annotations

from dataclasses import dataclass

FLAGS = ("archived", "pinned", "temporary")


@dataclass(frozen=True)
class ListFilters:
    archived: bool = False
    pinned: bool = False
    temporary: bool = False

    def accepts(self, header: dict) -> bool:
        return (bool(header.get("archived")) == self.archived
                and bool(header.get("temporary")) == self.temporary
                and (not self.pinned or bool(header.get("pinned"))))
