"""Build test data through the services, the way the API would."""
from decimal import Decimal
from itertools import count

from loyalty.members import service as members
from loyalty.points import service as points

_numbers = count(1)


def member(**fields):
    n = next(_numbers)
    fields.setdefault("name", f"Member {n}")
    fields.setdefault("phone", f"+86138{n:08d}")
    return members.register_member(**fields)


def purchase(member_id, amount, store_id="S1", receipt_no=None, **kwargs):
    receipt_no = receipt_no or f"R{next(_numbers)}"
    return points.credit_purchase(member_id, store_id, receipt_no, Decimal(str(amount)), **kwargs)


def D(value):
    return Decimal(str(value))
