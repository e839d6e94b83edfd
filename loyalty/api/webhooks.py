from flask import g
from flask.views import MethodView

from loyalty.api.base import Blueprint
from loyalty.api.schemas.common import ListQuerySchema
from loyalty.api.schemas.webhooks import (DeliveryPageSchema, DeliveryQuerySchema, DeliverySchema, ReplayedSchema,
                                          SubscriptionCreateSchema, SubscriptionFieldsSchema, SubscriptionListSchema,
                                          SubscriptionSchema)
from loyalty.auth import roles
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.webhooks import service

blp = Blueprint("webhooks", __name__, description="Webhook subscriptions, deliveries and replays")


def _with_counts(subscriptions):
    counts = service.subscription_stats([s.id for s in subscriptions])
    return [{"id": s.id, "url": s.url, "events": s.events, "description": s.description, "active": s.active,
             "created_at": s.created_at, "updated_at": s.updated_at, "deliveries": counts[s.id]}
            for s in subscriptions]


@blp.route("/webhooks")
class Webhooks(MethodView):
    @roles("admin")
    @blp.arguments(ListQuerySchema(), location="query")
    @blp.response(200, SubscriptionListSchema)
    def get(self, query):
        """The subscriptions, oldest first, with their deliveries counted by status; paginated by cursor"""
        cursor = query.get("cursor")
        items, last = service.subscriptions(query["limit"], decode_cursor(cursor) if cursor else None)
        return {"items": _with_counts(items), "next_cursor": encode_cursor(last) if last else None}

    @roles("admin")
    @blp.idempotent
    @blp.arguments(SubscriptionCreateSchema())
    @blp.response(201, SubscriptionSchema)
    def post(self, data):
        """Subscribe a URL to events; each delivery is signed with the secret (audit-logged)"""
        return _with_counts([service.create_subscription(data, g.principal.actor)])[0]


@blp.route("/webhooks/<id:subscription_id>")
class WebhookById(MethodView):
    @roles("admin")
    @blp.response(200, SubscriptionSchema)
    def get(self, subscription_id):
        """A subscription"""
        return _with_counts([service.get_subscription(subscription_id)])[0]

    @roles("admin")
    @blp.arguments(SubscriptionFieldsSchema())
    @blp.response(200, SubscriptionSchema)
    def patch(self, changes, subscription_id):
        """Change the URL, events, secret, description, or pause and resume (audit-logged)"""
        return _with_counts([service.update_subscription(subscription_id, changes, g.principal.actor)])[0]

    @roles("admin")
    @blp.response(200, SubscriptionSchema)
    def delete(self, subscription_id):
        """Stop a subscription for good; its deliveries not yet made are cancelled (audit-logged)"""
        return _with_counts([service.delete_subscription(subscription_id, g.principal.actor)])[0]


@blp.route("/webhooks/<id:subscription_id>/deliveries")
class WebhookDeliveries(MethodView):
    @roles("admin")
    @blp.arguments(DeliveryQuerySchema(), location="query")
    @blp.response(200, DeliveryPageSchema)
    def get(self, query, subscription_id):
        """The subscription's deliveries newest first, each with its attempts (filter by `status`)"""
        cursor = query.get("cursor")
        items, last = service.deliveries(subscription_id, query.get("status"), query["limit"],
                                         decode_cursor(cursor) if cursor else None)
        return {"items": items, "next_cursor": encode_cursor(last) if last else None}


@blp.route("/webhooks/<id:subscription_id>/replay")
class WebhookReplayDead(MethodView):
    @roles("admin")
    @blp.idempotent
    @blp.response(200, ReplayedSchema)
    def post(self, subscription_id):
        """Every dead delivery of the subscription is tried again from the start (audit-logged)"""
        return {"replayed": service.replay_dead(subscription_id, g.principal.actor)}


@blp.route("/webhook-deliveries/<id:delivery_id>/replay")
class DeliveryReplay(MethodView):
    @roles("admin")
    @blp.idempotent
    @blp.response(200, DeliverySchema)
    def post(self, delivery_id):
        """Send a dead (or delivered) delivery again, from the first try (audit-logged)"""
        return service.replay(delivery_id, g.principal.actor)
