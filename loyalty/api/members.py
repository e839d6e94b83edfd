from flask import g
from flask.views import MethodView

from loyalty.api.base import IDEMPOTENCY_KEY, QR_RESPONSES, Blueprint, qr_response
from loyalty.api.schemas.members import (MemberCreateSchema, MemberListSchema, MemberLookupSchema,
                                         MemberSchema, MemberUpdateSchema)
from loyalty.api.schemas.members import EraseSchema, ExportSchema, MergeSchema, TokenCreateSchema, TokenSchema
from loyalty.auth import roles
from loyalty.members import merge, privacy, service, tokens

blp = Blueprint("members", __name__, description="Members: registration, lookup, profile, card")


@blp.route("/members")
class Members(MethodView):
    @roles("app", "pos")
    @blp.idempotent
    @blp.arguments(MemberCreateSchema())
    @blp.response(201, MemberSchema)
    def post(self, data):
        """Register a member (409 with `member_id` if an identity already belongs to someone)"""
        return service.register_member(**data)

    @roles("pos", "marketing")
    @blp.arguments(MemberLookupSchema(), location="query")
    @blp.response(200, MemberListSchema)
    def get(self, query):
        """Find members by phone, email, card token, or channel and external id (a staff read is audit-logged)"""
        found = service.find_members(**query)
        privacy.record_read(g.principal.actor, g.principal.role, "lookup", [m.id for m in found])
        return {"items": found}


@blp.route("/members/<id:member_id>")
class MemberById(MethodView):
    @roles("app", "pos", "marketing", member=True)
    @blp.response(200, MemberSchema)
    def get(self, member_id):
        """A member, with tier and points (a read by marketing or admin is audit-logged)"""
        member = service.read_member(member_id)
        privacy.record_read(g.principal.actor, g.principal.role, "profile", member.id)
        return member

    @roles("app", member=True)
    @blp.arguments(MemberUpdateSchema())
    @blp.response(200, MemberSchema)
    def patch(self, changes, member_id):
        """Change a member's profile (a member token: its own name and email only; audit-logged)"""
        return service.update_member(member_id, changes, actor=g.principal.actor,
                                     editable=service.MEMBER_EDITABLE if g.principal.member_id else None)


# Two literal paths, as API.md names them (a `card.{fmt}` template hides them from the spec).
@blp.route("/members/<id:member_id>/card.png", endpoint="MemberCardPng", defaults={"fmt": "png"})
@blp.route("/members/<id:member_id>/card.svg", endpoint="MemberCardSvg", defaults={"fmt": "svg"})
class MemberCard(MethodView):
    @roles("app", "pos", member=True)
    @blp.doc(responses=QR_RESPONSES)
    def get(self, member_id, fmt):
        """The QR code of the member's card token (a POS scans it, then looks up `?card=`)"""
        return qr_response(service.get_member(member_id).card_token, fmt)


@blp.route("/members/<id:member_id>/merge")
class MemberMerge(MethodView):
    @roles("admin")
    @blp.idempotent
    @blp.arguments(MergeSchema())
    @blp.response(200, MemberSchema)
    def post(self, data, member_id):
        """Merge another record of the same person into this member (points, lots, history,
        identities, referrals, tags); the other is closed and its lookups answer with this one"""
        return merge.merge_members(member_id, data["from_member_id"], g.principal.actor)


# A token is a credential: it is never stored, so not as an idempotent answer either. Issuing
# changes nothing but the audit log, so a retry safely gets a token of its own.
TOKEN_IDEMPOTENCY_KEY = {**IDEMPOTENCY_KEY, "description": (
    "Accepted, and not needed: issuing changes nothing, so a retry gets a new token (both work). "
    "Tokens are never stored, not even as the answer to replay.")}


@blp.route("/members/<id:member_id>/tokens")
class MemberTokens(MethodView):
    @roles("app")
    @blp.doc(parameters=[TOKEN_IDEMPOTENCY_KEY])
    @blp.arguments(TokenCreateSchema())
    @blp.response(201, TokenSchema)
    def post(self, data, member_id):
        """Issue a member token for the member's own device, after the app has signed the member in
        (`Authorization: Bearer <token>`, role `member`: the member's own resources only)"""
        return tokens.issue_token(member_id, data.get("ttl_seconds"), g.principal.actor)

    @roles("app")
    @blp.response(204)
    def delete(self, member_id):
        """Revoke every token of the member, at once, in every process (sign-out everywhere)"""
        tokens.revoke_tokens(member_id, g.principal.actor)


@blp.route("/members/<id:member_id>/export")
class MemberExport(MethodView):
    @roles("admin")
    @blp.response(200, ExportSchema)
    def get(self, member_id):
        """Everything held about the member: profile, identities, tags, entries, purchases,
        points payments and holds (refused ones too), redemptions, referrals, tier history (the
        read is audit-logged)"""
        return privacy.export_member(member_id, g.principal.actor)


@blp.route("/members/<id:member_id>/erase")
class MemberErase(MethodView):
    @roles("admin")
    @blp.idempotent
    @blp.arguments(EraseSchema())
    @blp.response(200, MemberSchema)
    def post(self, data, member_id):
        """Erase the member's personal data for good (name, phone, email, birthday, identities,
        card token, referral code, tags); the ledger stays with the member number; audit-logged"""
        return privacy.erase_member(member_id, data["reason"], g.principal.actor)
