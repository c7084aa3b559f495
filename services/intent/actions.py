"""The suggested next action for a classified message (pure policy, no gRPC)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

# Intents whose answer is the live order status (Bitext names, plus common synonyms).
ORDER_TRACKING_INTENTS = frozenset({"track_order", "order_status", "delivery_period"})
# Intents that cannot be served without knowing which order.
NEEDS_ORDER_ID_INTENTS = ORDER_TRACKING_INTENTS | frozenset({"cancel_order", "change_order"})
# Intents a person should handle.
HUMAN_INTENTS = frozenset({"contact_human_agent", "complaint"})
# A top-1/top-2 probability gap below this means the message is ambiguous.
AMBIGUITY_MARGIN = 0.05


class ActionType(enum.Enum):
    ANSWER_WITH_TEMPLATE = "answer_with_template"
    ASK_FOR_ORDER_ID = "ask_for_order_id"
    HAND_OFF_TO_HUMAN = "hand_off_to_human"
    REPLY_WITH_ORDER_STATUS = "reply_with_order_status"
    ASK_TO_REPHRASE = "ask_to_rephrase"


class LookupOutcome(enum.Enum):
    NOT_ATTEMPTED = "not_attempted"
    FOUND = "found"
    UNKNOWN_ORDER = "unknown_order"
    DISPATCH_UNAVAILABLE = "dispatch_unavailable"


@dataclass(frozen=True)
class NextAction:
    type: ActionType
    template_id: str = ""
    reply_text: str = ""


def needs_order_lookup(intent: str, out_of_scope: bool, order_id: str | None) -> bool:
    """True when dispatch should be asked about ``order_id`` for this classification."""
    return not out_of_scope and intent in ORDER_TRACKING_INTENTS and bool(order_id)


def choose_next_action(
    intent: str,
    top2_margin: float,
    out_of_scope: bool,
    order_id: str | None,
    lookup: LookupOutcome,
    *,
    status_text: str = "",
    templates: Mapping[str, str] | None = None,
) -> NextAction:
    """The next step for the agent or bot.

    Order: out of scope -> human; ambiguous -> rephrase; human intents -> human; order
    tracking with a lookup -> status (or a fallback when dispatch is unreachable or does not
    know the order); order intents without an id -> ask for it; otherwise the intent's template.
    """
    templates = templates or {}
    if out_of_scope:
        return NextAction(
            ActionType.HAND_OFF_TO_HUMAN,
            "out_of_scope.v1",
            "I'm not sure I understood; let me pass you to a colleague who can help.",
        )
    if top2_margin < AMBIGUITY_MARGIN:
        return NextAction(
            ActionType.ASK_TO_REPHRASE,
            "rephrase.v1",
            "Sorry, could you tell me a bit more about what you need?",
        )
    if intent in HUMAN_INTENTS:
        return NextAction(
            ActionType.HAND_OFF_TO_HUMAN,
            f"{intent}.v1",
            templates.get(intent, "I'm connecting you with a member of our team now."),
        )
    if intent in ORDER_TRACKING_INTENTS and order_id:
        if lookup is LookupOutcome.FOUND:
            return NextAction(
                ActionType.REPLY_WITH_ORDER_STATUS, f"{intent}.status.v1", status_text
            )
        if lookup is LookupOutcome.UNKNOWN_ORDER:
            return NextAction(
                ActionType.ASK_FOR_ORDER_ID,
                "order_id.unknown.v1",
                f"I couldn't find order {order_id}. Could you check the order number?",
            )
        if lookup is LookupOutcome.DISPATCH_UNAVAILABLE:
            return NextAction(
                ActionType.ANSWER_WITH_TEMPLATE,
                f"{intent}.tracking_unavailable.v1",
                f"Live tracking for order {order_id} is unavailable right now; "
                "please try again in a few minutes.",
            )
    if intent in NEEDS_ORDER_ID_INTENTS and not order_id:
        return NextAction(
            ActionType.ASK_FOR_ORDER_ID,
            "order_id.ask.v1",
            "Could you give me your order number?",
        )
    return NextAction(ActionType.ANSWER_WITH_TEMPLATE, f"{intent}.v1", templates.get(intent, ""))
