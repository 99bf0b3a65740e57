"""The last few things of a kind a worker used, by key: a bounded map, the least recently
stored going first. For what a worker keeps of the conversations it served lately."""
from __future__ import annotations

import threading
from collections import OrderedDict


class Recent:
    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # greenlets or threads of one worker share it

    def get(self, key, default=None):
        with self._lock:
            return self._items.get(key, default)

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, key) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items
