"""Conversations: the message tree, the rules that change it, and the files that keep it."""
from .manager import ConversationManager
from .store import ConversationStore

__all__ = ["ConversationManager", "ConversationStore"]
