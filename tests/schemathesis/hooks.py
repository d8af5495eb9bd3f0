"""Schemathesis hooks for chatwire (loaded through SCHEMATHESIS_HOOKS by run.sh).

GET /messages has two rules that no OpenAPI parameter schema can state:
at most one bound (`before`, `beforeId`, `after`, `afterId`: a before-bound
and an after-bound together, or a time and an id on the same side, get 422),
and an id bound must name a message of the chat (else 422). So that
`positive_data_acceptance` still holds the route to "valid data gets 2xx",
a positive case keeps one bound (the first it has, in that order), and an
id bound is replaced by the id of a message run.sh stored in chat
`general` (the case's chatId becomes `general`). Negative cases are sent
as generated.
"""

from __future__ import annotations

import os

import schemathesis

BOUNDS = ("before", "beforeId", "after", "afterId")
SEED_ID = os.environ["CHATWIRE_SEED_MESSAGE_ID"]
SEED_CHAT = os.environ.get("CHATWIRE_SEED_CHAT", "general")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/messages" or case.meta is None:
        return
    if not case.meta.generation.mode.is_positive or not case.query:
        return
    present = [name for name in BOUNDS if name in case.query]
    for name in present[1:]:
        del case.query[name]
    if present and present[0].endswith("Id"):
        case.query[present[0]] = SEED_ID
        case.query["chatId"] = SEED_CHAT
