"""Gunicorn's entry point: `gunicorn wsgi:app`, configured by the environment."""
from apsara import create_app

app = create_app()
