"""`GET /api/v1/usage`: tokens and estimated cost, for a user or (admin keys) anyone."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import RAISE

from ..auth import current_user, is_admin
from ..errors import ApiError
from ..schemas import ErrorSchema, UsageQuerySchema, UsageReportSchema

blp = Blueprint("usage", __name__, url_prefix="/api/v1", description="Usage and estimated cost.")


@blp.route("/usage", methods=["GET"])
@blp.arguments(UsageQuerySchema(), location="query", unknown=RAISE)  # a misspelt parameter is an error
@blp.response(200, UsageReportSchema)
@blp.alt_response(422, schema=ErrorSchema, description="A bad date or group, or `user` without an admin key.")
def usage(query):
    """Calls, tokens and cost between two UTC days (default: this month), optionally grouped."""
    today = datetime.now(timezone.utc).date()
    first, last = query.get("from_") or today.replace(day=1), query.get("to") or today
    user = query.get("user")
    if user not in (None, current_user()) and not is_admin():
        raise ApiError(422, "only an admin key (APSARA_ADMIN_KEYS) may ask for another user's usage",
                       {"user": ["needs an admin key"]})
    if user is None:
        user = current_user()
    if query.get("group_by") == "user" and user != "*":
        raise ApiError(422, "group_by=user needs user=* (and an admin key)", {"group_by": ["needs user=*"]})
    ledger = current_app.extensions["apsara"].usage.ledger
    totals, groups = ledger.report(None if user == "*" else user, first, last, query.get("group_by"))
    report = {"from": first.isoformat(), "to": last.isoformat(), "user": user, "totals": totals}
    if query.get("group_by"):
        report["groups"] = groups
    return jsonify(report)
