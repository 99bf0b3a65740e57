"""Messages: send, edit, regenerate, select."""
from flask_smorest import Blueprint

blp = Blueprint("messages", __name__, url_prefix="/api/v1/conversations",
                description="Messages and their versions.")
