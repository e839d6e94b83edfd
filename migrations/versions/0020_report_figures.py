"""report figures: running sums of members, balances, open lots and entries, kept by triggers

Revision ID: 0020
Revises: 0018
Create Date: 2026-11-29 16:30:00

The overview and the liability read these sums instead of every member, account, lot and entry
(loyalty/segments/figures.py says what each row adds). Triggers write them, so every code path
that changes those tables keeps them, set-based jobs included: on PostgreSQL one row per statement
and key (statement-level triggers over the transition tables), on SQLite one per changed row.
The tables start from the data as it is, under the triggers' table locks.
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0018'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# figures table, source table, key expressions, value expressions, the rows that count, the
# source columns whose change matters (SQLite's UPDATE OF). `{r}` is the source row.
SPECS = [
    ("report_member_counts", "members",
     [("tier_code", "{r}tier_code"), ("lifecycle_stage", "{r}lifecycle_stage"),
      ("value_segment", "{r}value_segment")],
     [("members", "1")], "{r}status = 'active'",
     ["tier_code", "lifecycle_stage", "value_segment", "status"]),
    ("report_balances", "accounts", [],
     [("available", "CASE WHEN {r}available > 0 THEN {r}available ELSE 0 END"), ("pending", "{r}pending"),
      ("held", "{r}held"), ("debt", "{r}debt")], None,
     ["available", "pending", "held", "debt"]),
    ("report_lots", "lots", [("expires_at", "{r}expires_at"), ("status", "{r}status")],
     [("remaining", "{r}remaining")], "{r}status IN ('available', 'pending') AND {r}remaining <> 0",
     ["expires_at", "status", "remaining"]),
    ("report_entry_hours", "ledger_entries", [("hour", "{hour}")], [("points", "{r}points")], None,
     ["created_at", "type", "points"]),
]
# The entries' key has the type too; kept apart because its hour expression differs by database.
HOUR = {"postgresql": "date_trunc('hour', {r}created_at, 'UTC')",
        "sqlite": "strftime('%Y-%m-%d %H:00:00.000000', {r}created_at)"}


def keys_of(spec, dialect):
    table, _, keys, *_ = spec
    if table == "report_entry_hours":
        return [("hour", HOUR[dialect]), ("type", "{r}type")]
    return keys


def postgresql_ddl(spec):
    table, source, _, values, where, _ = spec
    keys = keys_of(spec, "postgresql")
    columns = ", ".join(name for name, _ in keys + values)

    def part(rows, sign):
        exprs = [f"{expr.format(r='r.')} AS {name}" for name, expr in keys] + [f"{sign}({expr.format(r='r.')}) AS {name}"
                                                             for name, expr in values]
        condition = f" WHERE {where.format(r='r.')}" if where else ""
        return f"SELECT {', '.join(exprs)} FROM {rows} r{condition}"

    group = ", ".join(f"c.{name}" for name, _ in keys)
    sums = ", ".join(f"sum(c.{name})" for name, _ in values)
    nonzero = " OR ".join(f"sum(c.{name}) <> 0" for name, _ in values)
    statements = []
    for event, parts in (("INSERT", [("new_rows", "")]), ("DELETE", [("old_rows", "-")]),
                         ("UPDATE", [("old_rows", "-"), ("new_rows", "")])):
        union = " UNION ALL ".join(part(rows, sign) for rows, sign in parts)
        select_keys = ", ".join(f"c.{name}" for name, _ in keys)
        body = (f"INSERT INTO {table} ({columns}) SELECT {select_keys + ', ' if keys else ''}{sums} "
                f"FROM ({union}) c{' GROUP BY ' + group if keys else ''} HAVING {nonzero};")
        function = f"{table}_{event.lower()}"
        referencing = {"INSERT": "NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows",
                       "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}[event]
        statements.append(f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                          f"BEGIN {body} RETURN NULL; END $$")
        statements.append(f"CREATE TRIGGER {function} AFTER {event} ON {source} REFERENCING {referencing} "
                          f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    return statements


def sqlite_ddl(spec):
    table, source, _, values, where, watched = spec
    keys = keys_of(spec, "sqlite")
    columns = ", ".join(name for name, _ in keys + values)

    def insert(row, sign):
        exprs = [expr.format(r=f"{row}.") for _, expr in keys] + [f"{sign}({expr.format(r=f'{row}.')})"
                                                                  for _, expr in values]
        condition = f" WHERE {where.format(r=f'{row}.')}" if where else ""
        return f"INSERT INTO {table} ({columns}) SELECT {', '.join(exprs)}{condition};"

    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in watched)
    return [
        f"CREATE TRIGGER {table}_insert AFTER INSERT ON {source} BEGIN {insert('NEW', '')} END",
        f"CREATE TRIGGER {table}_delete AFTER DELETE ON {source} BEGIN {insert('OLD', '-')} END",
        f"CREATE TRIGGER {table}_update AFTER UPDATE OF {', '.join(watched)} ON {source} WHEN {changed} "
        f"BEGIN {insert('OLD', '-')} {insert('NEW', '')} END",
    ]


def initial_fill(spec, dialect):
    """The sums of the data as it is: one row per key."""
    table, source, _, values, where, _ = spec
    keys = keys_of(spec, dialect)
    columns = ", ".join(name for name, _ in keys + values)
    key_exprs = [expr.format(r="") for _, expr in keys]
    sums = [f"sum({expr.format(r='')})" for _, expr in values]
    nonzero = " OR ".join(sums_ + " <> 0" for sums_ in sums)
    return (f"INSERT INTO {table} ({columns}) SELECT {', '.join(key_exprs + sums)} FROM {source}"
            f"{' WHERE ' + where.format(r='') if where else ''}"
            f"{' GROUP BY ' + ', '.join(key_exprs) if keys else ''} HAVING {nonzero}")


def upgrade():
    op.create_table('report_member_counts',
                    sa.Column('id', BIG_ID, nullable=False),
                    sa.Column('tier_code', sa.String(length=20), nullable=True),
                    sa.Column('lifecycle_stage', sa.String(length=20), nullable=True),
                    sa.Column('value_segment', sa.String(length=20), nullable=True),
                    sa.Column('members', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_member_counts')))
    op.create_table('report_balances',
                    sa.Column('id', BIG_ID, nullable=False),
                    sa.Column('available', sa.BigInteger(), nullable=False),
                    sa.Column('pending', sa.BigInteger(), nullable=False),
                    sa.Column('held', sa.BigInteger(), nullable=False),
                    sa.Column('debt', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_balances')))
    op.create_table('report_lots',
                    sa.Column('id', BIG_ID, nullable=False),
                    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('status', sa.String(length=10), nullable=False),
                    sa.Column('remaining', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_lots')))
    op.create_table('report_entry_hours',
                    sa.Column('id', BIG_ID, nullable=False),
                    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('type', sa.String(length=20), nullable=False),
                    sa.Column('points', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_entry_hours')))
    op.create_index('ix_report_entry_hours_hour', 'report_entry_hours', ['hour'], unique=False)
    dialect = op.get_bind().dialect.name
    for spec in SPECS:
        if dialect == "postgresql":
            # The triggers' locks keep writers out until this transaction commits, so the sums
            # start from data no one is changing.
            op.execute(f"LOCK TABLE {spec[1]} IN SHARE ROW EXCLUSIVE MODE")
        for statement in (postgresql_ddl(spec) if dialect == "postgresql" else sqlite_ddl(spec)):
            op.get_bind().exec_driver_sql(statement)
        op.get_bind().exec_driver_sql(initial_fill(spec, dialect))


def downgrade():
    dialect = op.get_bind().dialect.name
    for table, source, *_ in SPECS:
        for event in ("insert", "delete", "update"):
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER {table}_{event} ON {source}")
                op.execute(f"DROP FUNCTION {table}_{event}()")
            else:
                op.execute(f"DROP TRIGGER {table}_{event}")
    op.drop_index('ix_report_entry_hours_hour', table_name='report_entry_hours')
    for table in ('report_entry_hours', 'report_lots', 'report_balances', 'report_member_counts'):
        op.drop_table(table)
