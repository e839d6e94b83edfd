"""Promotions (issue 16 in the console, issue 17): the list by status, create and edit forms for
every field of a promotion, stop (after a confirmation page), a promotion's page with its stats,
and the simulator. The form's flat fields ("effect.type", "scope.stores"...) become the API's JSON
document, read through the API's own schemas and handed to the same service functions."""
import re
from decimal import Decimal

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from loyalty import clock
from loyalty.api.schemas.promotions import PromotionCreateSchema, PromotionFieldsSchema, SimulateSchema
from loyalty.console.base import FormErrors, actor, attempt, blp, load, local_times, staff_only
from loyalty.members import service as members_service
from loyalty.points.service import quote_purchase
from loyalty.promotions import service
from loyalty.promotions.rules import EFFECTS, PERIODS, STACKING
from loyalty.tiers import service as tiers_service

PAGE = 50
DAYS = (1, 2, 3, 4, 5, 6, 7)
SCALARS = ("name", "status", "starts_at", "ends_at", "schedule.from", "schedule.until", "scope.min_amount",
           "effect.type", "effect.value", "effect.points", "effect.per", "limits.per_member",
           "limits.per_member_period", "limits.budget_points", "stacking", "priority")
CODE_LISTS = ("scope.stores", "scope.channels", "scope.tags", "scope.categories", "scope.skus")  # typed, comma separated
CHECKED = ("schedule.days_of_week", "scope.tiers")  # check boxes, several values
INTEGERS = ("limits.per_member", "priority")  # the API's fields take JSON integers
FIELDS = SCALARS + CODE_LISTS + CHECKED + ("scope.first_purchase_only",)
EFFECT_FIELDS = {"multiplier": ("value",), "bonus": ("points",), "per_amount": ("points", "per")}
INTEGER = re.compile(r"^-?[0-9]{1,9}$")

# Stored codes and the API's sentences these pages translate ({{ _(promotion.stacking) }}, a field's
# message): listed so that `pybabel extract` finds them.
DATA_WORDS = (
    lazy_gettext("draft"), lazy_gettext("stopped"), lazy_gettext("ended"), lazy_gettext("multiplier"),
    lazy_gettext("per_amount"), lazy_gettext("stack"), lazy_gettext("exclusive"), lazy_gettext("day"),
    lazy_gettext("week"), lazy_gettext("promotion"), lazy_gettext("base"), lazy_gettext("tier"),
    lazy_gettext("referral"), lazy_gettext("Base points"), lazy_gettext("Welcome reward: joined with a referral"),
    lazy_gettext("Required for a multiplier effect."), lazy_gettext("Required for a bonus effect."),
    lazy_gettext("Required for a per_amount effect."), lazy_gettext("Not part of a multiplier effect."),
    lazy_gettext("Not part of a bonus effect."), lazy_gettext("Not part of a per_amount effect."),
    lazy_gettext("A multiplier must be more than 1 and at most 10."),
    lazy_gettext("Unknown effect; must be one of: multiplier, bonus, per_amount."),
    lazy_gettext("Must be a day of the week from 1 (Monday) to 7 (Sunday)."),
    lazy_gettext("Must be a local time HH:MM, from 00:00 to 23:59."), lazy_gettext("Must be after starts_at."),
    lazy_gettext("Must differ from 'from' (a window of no time never applies)."),
    lazy_gettext("Give per_member with per_member_period: how many purchases per period."),
    lazy_gettext("Must be draft or active."), lazy_gettext("Must be greater than or equal to 1 and less than or equal to 1000."),
    lazy_gettext("Shorter than minimum length 1."), lazy_gettext("Not a valid string."),
    lazy_gettext("Not a valid integer: use ASCII digits."),
)


@blp.app_template_filter("decimal_text")
def decimal_text(value):
    """A stored decimal string as people write it: "2.00" -> "2", "1.50" -> "1.5"."""
    try:
        number = Decimal(value)
    except (TypeError, ArithmeticError):
        return value
    return f"{number.normalize():f}"


def day_names():
    return {1: _("Monday"), 2: _("Tuesday"), 3: _("Wednesday"), 4: _("Thursday"), 5: _("Friday"),
            6: _("Saturday"), 7: _("Sunday")}


# --- reading the form ---------------------------------------------------------------------------

def _form_state():
    """The submitted form as the template shows it again: strings, lists for the check boxes."""
    state = {name: request.form.get(name, "") for name in SCALARS + CODE_LISTS}
    state.update({name: request.form.getlist(name) for name in CHECKED})
    state["scope.first_purchase_only"] = "scope.first_purchase_only" in request.form
    return state


def _codes(text):
    """ "a, b" (or one a line, or Chinese commas) -> ["a", "b"]."""
    return [code.strip() for code in re.split(r"[,，\n]", text) if code.strip()]


def _number(text):
    return int(text) if INTEGER.match(text) else text  # anything else: the schema says what is wrong


def _document(state):
    """The API's JSON document of a promotion from the form's state; an empty group is null."""
    groups = {"schedule": {}, "scope": {}, "effect": {}, "limits": {}}
    top = {}
    for name in SCALARS:
        value = state[name].strip()
        if value == "":
            continue
        value = _number(value) if name in INTEGERS else value
        group, _dot, field = name.partition(".")
        if field:
            groups[group][field] = value
        else:
            top[name] = value
    for name in CODE_LISTS:
        if _codes(state[name]):
            groups["scope"][name.partition(".")[2]] = _codes(state[name])
    if state["schedule.days_of_week"]:
        groups["schedule"]["days_of_week"] = [_number(day) for day in state["schedule.days_of_week"]]
    if state["scope.tiers"]:
        groups["scope"]["tiers"] = state["scope.tiers"]
    if state["scope.first_purchase_only"]:
        groups["scope"]["first_purchase_only"] = True
    effect = groups["effect"]
    kept = EFFECT_FIELDS.get(effect.get("type", ""))
    if kept is not None:  # only the values of the chosen effect; the others' boxes may hold old numbers
        groups["effect"] = {key: value for key, value in effect.items() if key == "type" or key in kept}
    local_times(top, ("starts_at", "ends_at"))
    return {**top, "effect": groups["effect"], "schedule": groups["schedule"] or None,
            "scope": groups["scope"] or None, "limits": groups["limits"] or None}


def _by_field(errors):
    """The schemas' messages by form field: "scope.stores.0" and "items.2.amount" are shown at
    "scope.stores" and "items"."""
    placed = {}
    for key, messages in errors.items():
        parts = key.split(".")
        cut = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts))
        placed.setdefault(".".join(parts[:cut]) or "_schema", []).extend(messages)
    return placed


def _state_of(promotion):
    """A stored promotion as the form's state."""
    values = service.before_values(promotion)
    schedule, scope = values["schedule"] or {}, values["scope"] or {}
    effect, limits = values["effect"], values["limits"] or {}

    def text(value):
        return "" if value is None else str(value)

    state = {"name": values["name"], "status": values["status"], "starts_at": values["starts_at"],
             "ends_at": values["ends_at"], "schedule.from": text(schedule.get("from")),
             "schedule.until": text(schedule.get("until")), "scope.min_amount": text(scope.get("min_amount")),
             "effect.type": effect.get("type", ""), "effect.value": text(effect.get("value")),
             "effect.points": text(effect.get("points")), "effect.per": text(effect.get("per")),
             "limits.per_member": text(limits.get("per_member")),
             "limits.per_member_period": text(limits.get("per_member_period")),
             "limits.budget_points": text(limits.get("budget_points")), "stacking": values["stacking"],
             "priority": text(values["priority"])}
    state.update({name: ", ".join(scope.get(name.partition(".")[2]) or ()) for name in CODE_LISTS})
    state["schedule.days_of_week"] = [str(day) for day in schedule.get("days_of_week") or ()]
    state["scope.tiers"] = list(scope.get("tiers") or ())
    state["scope.first_purchase_only"] = bool(scope.get("first_purchase_only"))
    return state


def _form(promotion, state, errors=None, message=None, status=200):
    placed = _by_field(errors or {})
    return render_template("console/promotions/form.html", promotion=promotion, values=state, errors=placed,
                           other_errors={k: v for k, v in placed.items() if k not in FIELDS},
                           message=message, effects=EFFECTS, periods=PERIODS, stacking=STACKING,
                           tiers=tiers_service.ladder(), days=DAYS, day_names=day_names()), status


# --- the pages ----------------------------------------------------------------------------------

@blp.route("/promotions")
@staff_only("marketing")
def promotions():
    """The promotions, newest first, by status (draft, active, stopped, ended), paged."""
    status = request.args.get("status") or None
    status = status if status in service.STATUSES else None
    items, next_cursor = attempt(service.promotions, status, PAGE, request.args.get("cursor") or None)
    return render_template("console/promotions/list.html", items=items, status=status,
                           statuses=service.STATUSES, status_of=service.status_of, next_cursor=next_cursor)


@blp.route("/promotions/new", methods=["GET", "POST"])
@staff_only("marketing")
def promotions_new():
    if request.method == "GET":
        blank = {name: "" for name in SCALARS + CODE_LISTS} | {name: [] for name in CHECKED}
        return _form(None, blank | {"status": "draft", "starts_at": clock.now(), "stacking": "stack", "priority": "0",
                                    "effect.type": "multiplier", "scope.first_purchase_only": False})
    state = _form_state()
    document = {key: value for key, value in _document(state).items() if value is not None}
    try:
        data = load(PromotionCreateSchema(), document)
        promotion = attempt(service.create_promotion, data, actor())
    except FormErrors as error:
        return _form(None, state, error.errors, error.message, 422)
    flash(_("Promotion created."), "ok")
    return redirect(url_for("console.promotions_show", promotion_id=promotion.id))


@blp.route("/promotions/<id:promotion_id>")
@staff_only("marketing")
def promotions_show(promotion_id):
    """A promotion's terms and its stats: purchases, members, points granted and taken back, spend, budget."""
    promotion = service.get_promotion(promotion_id)
    return render_template("console/promotions/show.html", promotion=promotion, values=_state_of(promotion),
                           status=service.status_of(promotion), stats=service.promotion_stats(promotion_id),
                           day_names=day_names())


@blp.route("/promotions/<id:promotion_id>/edit", methods=["GET", "POST"])
@staff_only("marketing")
def promotions_edit(promotion_id):
    promotion = service.get_promotion(promotion_id)
    if request.method == "GET":
        return _form(promotion, _state_of(promotion))
    state = _form_state()
    document = _document(state)
    document.setdefault("ends_at", None)  # an emptied end: runs until stopped
    try:
        changes = load(PromotionFieldsSchema(), document)
        attempt(service.update_promotion, promotion_id, changes, actor())
    except FormErrors as error:
        return _form(promotion, state, error.errors, error.message, 422)
    flash(_("Promotion saved."), "ok")
    return redirect(url_for("console.promotions_show", promotion_id=promotion_id))


@blp.route("/promotions/<id:promotion_id>/stop", methods=["GET", "POST"])
@staff_only("marketing")
def promotions_stop(promotion_id):
    """GET asks for a confirmation; POST stops the promotion for good (as POST /promotions/{id}/stop)."""
    promotion = service.get_promotion(promotion_id)
    if request.method == "GET":
        return render_template("console/promotions/stop.html", promotion=promotion,
                               status=service.status_of(promotion))
    attempt(service.stop_promotion, promotion_id, actor())
    flash(_("Promotion stopped: purchases from now on get nothing from it."), "ok")
    return redirect(url_for("console.promotions_show", promotion_id=promotion_id))


# --- the simulator ------------------------------------------------------------------------------

SIMULATE_FIELDS = ("store_id", "amount", "member", "items", "channel", "at")


def _items(text):
    """One item a line: "sku, category, quantity, amount" (the category may be left empty)."""
    items = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [part.strip() for part in re.split(r"[,，]", line)]
        if len(parts) != 4:
            raise FormErrors(_("Some fields are missing or invalid; see the messages next to them."), {"items": [
                _("Write each item on its own line as: SKU, category, quantity, amount.")]})
        sku, category, quantity, amount = parts
        items.append({"sku": sku, "quantity": quantity, "amount": amount} | ({"category": category} if category else {}))
    return items


def _member_id(text):
    """The member typed into the simulator (phone, member number, email or card token), or None."""
    if not text:
        return None
    try:
        found = attempt(members_service.search, text)
    except FormErrors as error:  # the search's sentence, next to the member's field
        raise FormErrors(error.message, {"member": [error.message]}) from None
    if len(found) != 1:
        raise FormErrors(_("Some fields are missing or invalid; see the messages next to them."), {"member": [
            _("No member matches %(query)s.", query=text) if not found else
            _("Several members match %(query)s; type their member number.", query=text)]})
    return found[0].id


def _simulate(state):
    """The form -> quote_purchase's arguments, through the API's SimulateSchema; then the quote."""
    values = {key: state[key] for key in ("store_id", "amount", "channel", "at") if state[key]}
    local_times(values, ("at",))
    member_id = _member_id(state["member"])
    items = _items(state["items"])
    if items:
        values["items"] = items
    values["include_drafts"] = state["include_drafts"]
    data = load(SimulateSchema(), values)
    if not data.get("store_id"):
        raise FormErrors(_("Name the store this is for."), {"store_id": ["Missing data for required field."]})
    return attempt(quote_purchase, member_id, data["store_id"], data["amount"], items=data.get("items"),
                   channel=data.get("channel"), at=data.get("at"), include_drafts=data["include_drafts"])


@blp.route("/promotions/simulate", methods=["GET", "POST"])
@staff_only("marketing")
def promotions_simulate():
    """A basket -> its points line by line, as a purchase would credit them (POST /promotions/simulate);
    writes nothing, so a POST here changes nothing either."""
    state = {key: request.form.get(key, "").strip() for key in SIMULATE_FIELDS}
    state["include_drafts"] = "include_drafts" in request.form
    if request.method == "GET":
        return render_template("console/promotions/simulate.html", values=state, errors={}, result=None)
    try:
        result = _simulate(state)
    except FormErrors as error:
        return render_template("console/promotions/simulate.html", values=state, errors=_by_field(error.errors),
                               message=error.message, result=None), 422
    return render_template("console/promotions/simulate.html", values=state, errors={}, result=result)
