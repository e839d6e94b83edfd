"""The tier rule has one source, tiers/rules.py, in two forms: the Python the purchase path runs
(`met_by`, `tier_for`, `target_rank`) and the SQL the nightly recompute runs (`met_by_sql`,
`tier_for_sql`, `target_rank_sql`). On generated ladders and windows, run on the test database
(SQLite or PostgreSQL), both forms give the same answer for every row."""
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty.database import Money
from loyalty.extensions import db
from loyalty.tiers import rules
from loyalty.tiers.rules import TierRule

pytestmark = pytest.mark.usefixtures("ctx")

PROPERTIES = settings(max_examples=40, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

cents = st.integers(min_value=0, max_value=5_000_000).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def ladders(draw):
    """2 to 5 tiers with distinct ranks in any order, thresholds anywhere (0 included), either mode."""
    size = draw(st.integers(min_value=2, max_value=5))
    ranks = draw(st.lists(st.integers(min_value=0, max_value=20), min_size=size, max_size=size, unique=True))
    return [TierRule(f"t{rank}", rank, draw(st.one_of(st.just(Decimal("0.00")), cents)),
                     draw(st.integers(min_value=0, max_value=30)), draw(st.sampled_from(rules.MODES)))
            for rank in ranks]


@st.composite
def ladders_and_windows(draw):
    """A ladder, and windows of (spend, activities) with many right on a threshold or a cent/one off."""
    ladder = draw(ladders())
    near_spend = [tier.spend + delta for tier in ladder for delta in (Decimal("-0.01"), 0, Decimal("0.01"))
                  if tier.spend + delta >= 0]
    near_acts = [max(tier.activities + delta, 0) for tier in ladder for delta in (-1, 0, 1)]
    windows = draw(st.lists(st.tuples(st.one_of(st.sampled_from(near_spend), cents),
                                      st.one_of(st.sampled_from(near_acts), st.integers(0, 40))),
                            min_size=1, max_size=30))
    return ladder, windows


def run_on_database(rows, columns, expression):
    """`expression(columns...)` over literal rows, in the database; answers in row order."""
    selects = [sa.select(sa.literal(index).label("i"),
                         *(sa.literal(value, type_).label(name) for (name, type_), value in zip(columns, row)))
               for index, row in enumerate(rows)]
    table = (sa.union_all(*selects) if len(selects) > 1 else selects[0]).subquery("generated")
    answer = expression(*(table.c[name] for name, _ in columns))
    return [value for _, value in db.session.execute(sa.select(table.c.i, answer).order_by(table.c.i)).all()]


@PROPERTIES
@given(ladders_and_windows())
def test_met_by_and_its_sql_agree(world):
    ladder, windows = world
    for tier in ladder:
        in_sql = run_on_database(windows, [("spend", Money()), ("activities", sa.Integer())],
                                 lambda spend, activities: sa.case((tier.met_by_sql(spend, activities), 1), else_=0))
        assert in_sql == [int(tier.met_by(spend, activities)) for spend, activities in windows], tier


@PROPERTIES
@given(ladders_and_windows())
def test_tier_for_and_its_sql_agree(world):
    ladder, windows = world
    ordered = rules.ranked(ladder)
    in_sql = run_on_database(windows, [("spend", Money()), ("activities", sa.Integer())],
                             lambda spend, activities: rules.tier_for_sql(spend, activities, ladder))
    assert in_sql == [ordered.index(rules.tier_for(spend, activities, ladder)) for spend, activities in windows]


@PROPERTIES
@given(ladders(), st.data())
def test_positions_and_codes_in_sql_agree_with_the_ladder(ladder, data):
    ordered = rules.ranked(ladder)
    codes = data.draw(st.lists(st.sampled_from([tier.code for tier in ladder] + ["gone"]), min_size=1, max_size=10))
    positions = run_on_database([(code,) for code in codes], [("code", sa.String())],
                                lambda code: rules.position_sql(code, ladder))
    assert positions == [[tier.code for tier in ordered].index(code) if code != "gone" else 0 for code in codes]
    back = run_on_database([(position,) for position in positions], [("position", sa.Integer())],
                           lambda position: rules.code_sql(position, ladder))
    assert back == [ordered[position].code for position in positions]


@PROPERTIES
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.booleans(), st.integers(1, 3), st.integers(0, 4)),
                min_size=1, max_size=40))
def test_target_rank_and_its_sql_agree(cases):
    columns = [("current", sa.Integer()), ("qualified", sa.Integer()), ("protected", sa.Integer()),
               ("max_drop", sa.Integer()), ("floor", sa.Integer())]
    rows = [(current, qualified, int(protected), max_drop, floor)
            for current, qualified, protected, max_drop, floor in cases]
    in_sql = run_on_database(rows, columns, lambda current, qualified, protected, max_drop, floor:
                             rules.target_rank_sql(current, qualified, protected == 1, max_drop, floor=floor))
    assert in_sql == [rules.target_rank(*case) for case in cases]
