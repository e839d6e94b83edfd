"""The API schemas dump through a plan made once per schema (schemas/common.Schema); these are the
corners of marshmallow's dump it must keep. (Every answer of the suite is also checked against
marshmallow's own dump: tests/conftest.py, dumps_checked_against_marshmallow.)"""
from decimal import Decimal
from types import SimpleNamespace

import marshmallow
from marshmallow import fields
from marshmallow.utils import missing

from loyalty.api.schemas.common import MoneyField, PointsField, Schema


class Inner(Schema):
    code = fields.String()
    points = PointsField()


class Outer(Schema):
    id = fields.Integer()
    renamed = fields.String(data_key="name")
    deep = fields.String(attribute="record.lot.status")
    absent = fields.String()  # not on the object: left out of the answer
    defaulted = fields.String(dump_default="none given")
    amount = MoneyField(attribute="record.amount")
    inner = fields.Nested(Inner, allow_none=True)
    inners = fields.List(fields.Nested(Inner))
    method = fields.Method("get_method")

    def get_method(self, obj):
        return f"#{obj['id'] if isinstance(obj, dict) else obj.id}"


def marshmallows(schema, obj, many=False):
    return marshmallow.Schema._serialize(schema, obj, many=many)


def test_the_corners_of_a_dump_match_marshmallow():
    cases = [
        SimpleNamespace(id=1, renamed="x", record=SimpleNamespace(lot=SimpleNamespace(status="pending"),
                                                                  amount=Decimal("1.5")),
                        inner={"code": "a", "points": Decimal("10.00")},
                        inners=[SimpleNamespace(code="b", points=Decimal("-0.50"))]),
        SimpleNamespace(id=2, renamed=None, record=SimpleNamespace(lot=None, amount=None), inner=None, inners=[],
                        defaulted="given"),
        {"id": 3, "renamed": "from a dict", "record": {"lot": {"status": "available"}, "amount": "2"},
         "inner": SimpleNamespace(code="c"), "inners": []},
        SimpleNamespace(id=4, renamed="no record", inner=None, inners=[]),  # record missing: deep left out
    ]
    schema = Outer()
    for obj in cases:
        ours = schema.dump(obj)
        assert ours == marshmallows(schema, obj) and list(ours) == list(marshmallows(schema, obj))
    assert schema.dump(cases[0]) == {
        "id": 1, "name": "x", "deep": "pending", "defaulted": "none given", "amount": "1.50",
        "inner": {"code": "a", "points": Decimal("10")}, "inners": [{"code": "b", "points": Decimal("-0.5")}],
        "method": "#1"}
    assert "deep" not in schema.dump(cases[3]) and "absent" not in schema.dump(cases[0])
    assert Outer(many=True).dump(cases) == [marshmallows(schema, obj) for obj in cases]
    assert Outer(only=("id", "method")).dump(cases[1]) == {"id": 2, "method": "#2"}


class Sometimes(Schema):
    x = fields.Integer()
    y = fields.Integer()
    maybe = fields.Method("get_maybe")  # answers `missing` to be left out

    def get_maybe(self, obj):
        return obj["x"] if obj["x"] > 1 else missing


def test_a_field_that_answers_missing_is_left_out_and_a_nested_copy_keeps_only_its_fields():
    schema = Sometimes()
    assert schema.dump({"x": 1, "y": 2}) == {"x": 1, "y": 2} == marshmallows(schema, {"x": 1, "y": 2})
    assert schema.dump({"x": 3, "y": 2}) == {"x": 3, "y": 2, "maybe": 3}

    class Holder(Schema):
        # marshmallow copies an instance given to Nested with `only` and builds its fields again: the
        # copy must not dump with the plan the instance made before.
        inner = fields.Nested(schema, only=("x",))

    assert Holder().dump({"inner": {"x": 5, "y": 6}}) == {"inner": {"x": 5}}
