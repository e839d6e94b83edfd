import re

from flask import Response, render_template, request, stream_with_context, g

from loyalty.console.base import actor, blp
from loyalty.members import privacy
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.segments import service

PAGE = 50


@blp.route("/segments")
def segments():
    """Every stage, value segment, tier and tag with its member count."""
    return render_template("console/segments/list.html", counts=service.segment_counts())


@blp.route("/segments/<string(maxlength=80):name>")
def segment(name):
    cursor = request.args.get("cursor")
    members, figures, last = service.segment_page(name, PAGE, decode_cursor(cursor) if cursor else None)
    return render_template("console/segments/members.html", name=name, members=members, figures=figures,
                           mask=service.mask_phone, next_cursor=encode_cursor(last) if last else None)


@blp.route("/segments/<string(maxlength=80):name>/csv")
def segment_csv(name):
    """The same CSV as GET /segments/{name}/members?format=csv, streamed."""
    rows = service.csv_rows(name)
    first = next(rows)  # an unknown segment is a 404 page here, before anything is sent
    privacy.record_read(actor(), g.staff.role, f"segment {name} (console CSV)")
    return Response(stream_with_context(_chain(first, rows)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{re.sub(r"[^A-Za-z0-9_.-]", "-", name)}.csv"'})


def _chain(first, rest):
    yield first
    yield from rest
