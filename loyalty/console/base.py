"""What every console page shares: the blueprint, who is signed in, roles, CSRF, the language,
and turning a service's typed error into messages next to the form's fields.

Views here are thin like the API's: they read a form into plain values (through the API's own
marshmallow schemas, so a field is checked with the same rule and the same message), call the
same service function the API calls, with the staff member as the audit actor, and render."""
from datetime import datetime, timedelta
from functools import wraps
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import get_locale, lazy_gettext
from flask_wtf.csrf import CSRFProtect
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from loyalty import clock
from loyalty.config import settings
from loyalty.errors import LoyaltyError
from loyalty.staff import service as staff_service
from loyalty.tiers import service as tiers_service

blp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                static_folder="static", static_url_path="/static")
csrf = CSRFProtect()

LANGUAGES = {"zh": "zh_CN", "zh_CN": "zh_CN", "zh-CN": "zh_CN", "en": "en"}
# Pages anyone may open: signing in, and the assets of the sign-in page.
PUBLIC = {"console.sign_in", "console.static"}
# While a one-time password is in force, only these.
BEFORE_NEW_PASSWORD = PUBLIC | {"console.change_password", "console.sign_out"}


def select_locale():
    """?lang= switches (and is remembered in the session); otherwise the remembered choice;
    otherwise the browser's Accept-Language; otherwise Chinese."""
    if not request or not request.path.startswith("/console"):
        return "en"
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        session["lang"] = LANGUAGES[asked]
    if session.get("lang") in ("zh_CN", "en"):
        return session["lang"]
    best = request.accept_languages.best_match(["zh-CN", "zh", "en"])
    return "en" if best == "en" else "zh_CN"


@blp.before_request
def require_staff():
    csrf.protect() if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
    g.staff = _signed_in_staff()
    if g.staff is None and request.endpoint not in PUBLIC:
        return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?") if request.method == "GET" else None))
    if g.staff is not None and g.staff.must_change_password and request.endpoint not in BEFORE_NEW_PASSWORD:
        return redirect(url_for("console.change_password"))
    return None


def _signed_in_staff():
    """The staff member of this session, if it is still valid: not disabled, the password not
    changed since, and not idle longer than the idle timeout (then the session is ended)."""
    staff_id = session.get("staff_id")
    if staff_id is None:
        return None
    staff = staff_service.get_staff(staff_id)
    now = clock.now()
    idle = timedelta(minutes=settings().console_idle_minutes)
    seen = session.get("seen", 0)
    if (staff is None or staff.disabled_at is not None
            or session.get("pw") != staff.password_changed_at.isoformat()
            or now.timestamp() - seen > idle.total_seconds()):
        end_session()
        return None
    session["seen"] = int(now.timestamp())
    return staff


def start_session(staff):
    lang = session.get("lang")
    session.clear()  # a new session on sign-in: nothing carried over but the language
    if lang:
        session["lang"] = lang
    session["staff_id"] = staff.id
    session["pw"] = staff.password_changed_at.isoformat()
    session["seen"] = int(clock.now().timestamp())  # a browser-session cookie; idle time ends it sooner


def end_session():
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


def staff_only(*roles):
    """A view for these roles (admin may do everything); others get a 403 page."""
    allowed = set(roles) | {"admin"}

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if g.staff.role not in allowed:
                abort(403)
            return view(*args, **kwargs)
        return wrapper
    return decorator


def actor():
    return staff_service.actor_of(g.staff)


def is_admin():
    return g.get("staff") is not None and g.staff.role == "admin"


class FormErrors(Exception):
    """Messages for a form: field -> list of messages, and one sentence for the top."""

    def __init__(self, message, errors):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


def form_values(names=None):
    """The submitted form as a dict of stripped strings; empty fields are left out (not given)."""
    values = {}
    for key in request.form:
        if key == "csrf_token" or (names is not None and key not in names):
            continue
        value = request.form.get(key, "").strip()
        if value != "":
            values[key] = value
    return values


def load(schema, values, partial=False):
    """The API's schema over form values: the same rules and messages, or FormErrors."""
    try:
        return schema.load(values, partial=partial)
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        raise FormErrors(_("Some fields are missing or invalid; see the messages next to them."),
                         _flatten(messages)) from None


def _flatten(messages, prefix=""):
    flat = {}
    for key, value in messages.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = [str(m) for m in value]
    return flat


def attempt(call, *args, **kwargs):
    """Run a service call; a typed error becomes FormErrors with the service's own message."""
    try:
        return call(*args, **kwargs)
    except LoyaltyError as error:
        raise FormErrors(error.message, _flatten(error.errors) if isinstance(error.errors, dict) else {}) from None


def page(template, status=200, **context):
    return render_template(template, **context), status


@blp.app_template_global()
def nav_items():
    """The navigation (API.md names them): marketing's pages, then admin's."""
    items = [("console.dashboard", _("Dashboard")), ("console.members", _("Members")),
             ("console.tiers", _("Tiers")), ("console.earning_rules", _("Earning rules")),
             ("console.promotions", _("Promotions")), ("console.referrals", _("Referrals")), ("console.rewards", _("Rewards")),
             ("console.segments", _("Segments"))]
    if is_admin():
        items += [("console.audit_log", _("Audit log")), ("console.webhooks", _("Webhooks")),
                  ("console.jobs", _("Jobs")), ("console.api_keys", _("API keys"))]
    return items


@blp.app_template_filter("tier_name")
def tier_name(code):
    """The programme's own name of a tier (普通, 白银, 黄金, 钻石), as marketing set it."""
    return {tier.code: tier.name for tier in tiers_service.ladder()}.get(code, code)


@blp.app_template_filter("when")
def when(value):
    """A time in the deployment's time zone, to the minute."""
    if value is None:
        return "—"
    return clock.as_utc(value).astimezone(clock_zone()).strftime("%Y-%m-%d %H:%M")


def clock_zone():
    return ZoneInfo(settings().timezone)


@blp.app_template_filter("points")
def points(value):
    """120.5 -> 120.50 (points and money alike, exact)."""
    return "—" if value is None else f"{value:,.2f}"


@blp.errorhandler(LoyaltyError)
def loyalty_error(error):
    return render_template("console/error.html", message=error.message, status=error.status), error.status


@blp.errorhandler(FormErrors)
def form_error(error):
    """A refusal outside a form's own page (a replay, a revoke): the service's sentence."""
    return render_template("console/error.html", message=error.message, status=422), 422


@blp.errorhandler(HTTPException)
def http_error(error):
    """A console page's errors are pages, not the API's JSON: 403 (role), 400 (CSRF), 404."""
    messages = {403: _("Your role may not open this page; ask an admin."),
                404: _("There is nothing at this address."),
                400: _("The form expired or was not sent by this console; open the page again and resend it.")}
    status = error.code or 400
    return render_template("console/error.html", status=status,
                           message=messages.get(status, error.description)), status


def local_times(values, names):
    """A browser's datetime-local ("2026-12-01T09:00") is the deployment's local time: give it
    its offset, so the API's schema (which wants an aware time) reads it as meant."""
    for name in names:
        text = values.get(name)
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue  # the schema says what is wrong with it
        if moment.tzinfo is None:
            values[name] = moment.replace(tzinfo=clock_zone()).isoformat()
    return values


def nullable(values, names):
    """On an edit form, an emptied optional field means "none" (the API's null)."""
    for name in names:
        if name in request.form and request.form.get(name, "").strip() == "":
            values[name] = None
    return values


@blp.app_template_filter("local_input")
def local_input(value):
    """A stored time as a datetime-local input's value, in the deployment's time zone."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return clock.as_utc(value).astimezone(clock_zone()).strftime("%Y-%m-%dT%H:%M")


@blp.app_template_filter("dict_without")
def dict_without(args, name):
    """The query string without one parameter (for paging links)."""
    return urlencode([(k, v) for k, v in args.items(multi=True) if k != name])


@blp.app_template_global()
def errors_prefixed(errors, form_name):
    """The errors of one of a page's several forms, by field name ("adjust.points" -> "points")."""
    prefix = form_name + "."
    return {key[len(prefix):]: value for key, value in (errors or {}).items() if key.startswith(prefix)}


@blp.app_template_filter("zip_names")
def zip_names(codes):
    """Tier codes as (code, the programme's name) options."""
    return [(code, tier_name(code)) for code in codes]


@blp.app_template_filter("pair_label")
def pair_label(value):
    """A stored code as an (option value, translated label) pair."""
    return (value, _(value))


# Words the pages translate from stored codes ({{ _(member.lifecycle_stage) }}): listed here so
# that `pybabel extract` finds them.
DATA_WORDS = (
    lazy_gettext("potential"), lazy_gettext("new"), lazy_gettext("active"), lazy_gettext("dormant"),
    lazy_gettext("churned"), lazy_gettext("unknown"), lazy_gettext("high_value"), lazy_gettext("low_value"),
    lazy_gettext("at_risk"), lazy_gettext("marketing"), lazy_gettext("admin"), lazy_gettext("pos"),
    lazy_gettext("app"), lazy_gettext("closed"), lazy_gettext("merged"),
    lazy_gettext("earn_purchase"), lazy_gettext("earn_activity"), lazy_gettext("bonus"), lazy_gettext("redeem"),
    lazy_gettext("payment"), lazy_gettext("expire"), lazy_gettext("reverse"), lazy_gettext("adjust"),
    lazy_gettext("clawback"), lazy_gettext("refund"), lazy_gettext("release"), lazy_gettext("cancel"),
    lazy_gettext("completed"), lazy_gettext("cancelled"), lazy_gettext("pending"), lazy_gettext("delivered"),
    lazy_gettext("dead"), lazy_gettext("running"), lazy_gettext("succeeded"), lazy_gettext("failed"),
    lazy_gettext("skipped"), lazy_gettext("goods"), lazy_gettext("service"), lazy_gettext("coupon"),
    lazy_gettext("cash_voucher"), lazy_gettext("month"), lazy_gettext("ever"), lazy_gettext("never"),
    lazy_gettext("days_after_available"), lazy_gettext("end_of_month"), lazy_gettext("end_of_year"),
    # The field messages forms get most (marshmallow's and the API's own), shown next to a field.
    lazy_gettext("Missing data for required field."), lazy_gettext("Not a valid integer."),
    lazy_gettext("Not a valid number."), lazy_gettext("Not a valid date."), lazy_gettext("Not a valid datetime."),
    lazy_gettext("Must be greater than 0."), lazy_gettext("Must not be 0."), lazy_gettext("Must not be negative."),
    lazy_gettext("Must have at most 2 decimal places."), lazy_gettext("Must be a number."),
    lazy_gettext("Must be a decimal number such as 120.5, in ASCII digits."),
    lazy_gettext('Must be a decimal string such as "199.00".'),
)


@blp.app_template_global()
def page_lang():
    """The page's language as HTML names it."""
    return "en" if str(get_locale()) == "en" else "zh-CN"
