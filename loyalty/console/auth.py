"""Signing in and out, and the password change a one-time password forces (services in
loyalty/staff/)."""
from urllib.parse import urlsplit

from flask import g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from loyalty.console.base import FormErrors, attempt, blp, end_session, start_session
from loyalty.staff import service


@blp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if request.method == "GET":
        return render_template("console/sign_in.html", email="", next=request.args.get("next", ""))
    email = request.form.get("email", "")
    try:
        staff = attempt(service.sign_in, email, request.form.get("password", ""))
    except FormErrors as error:
        return render_template("console/sign_in.html", email=email, message=_translated(error.message),
                               next=request.form.get("next", "")), 401
    start_session(staff)
    if staff.must_change_password:
        return redirect(url_for("console.change_password"))
    return redirect(_local(request.form.get("next")) or url_for("console.dashboard"))


def _translated(message):
    """The service's sentences, in the page's language."""
    if message.startswith("Too many wrong passwords"):
        return _("Too many wrong passwords: this account is locked for 15 minutes. Try again later "
                 "or ask an admin to reset the password.")
    return _("The email or the password is wrong.")


def _local(target):
    """Only a path on this console: never an open redirect to another site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or target.startswith("//"):
        return None
    return target


@blp.route("/sign-out", methods=["POST"])
def sign_out():
    end_session()
    return redirect(url_for("console.sign_in"))


@blp.route("/password", methods=["GET", "POST"])
def change_password():
    if request.method == "GET":
        return render_template("console/password.html", errors={})
    try:
        attempt(service.change_password, g.staff.id, request.form.get("current_password", ""),
                request.form.get("new_password", ""), request.form.get("repeat_password", ""))
    except FormErrors as error:
        return render_template("console/password.html", errors=error.errors, message=error.message), 422
    staff = service.get_staff(g.staff.id)
    start_session(staff)  # the session is bound to the password: bind it to the new one
    return redirect(url_for("console.dashboard"))
