"""A turn of a conversation: planned without the conversation's lock, committed
under it, then run as a job that outlives the request that started it."""
