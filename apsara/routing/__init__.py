"""Automatic model choice: the `auto` model."""
