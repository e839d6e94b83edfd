"""The `loyalty` command: thin wrappers over services. `loyalty --help` lists everything.

`main` is a plain click group, not Flask's: `loyalty --help` shows our commands only (Flask's
`run`, `routes`, `shell` and its dotenv and `--app` options are not ours to offer), and the app is
built from the environment, like the web process builds it."""
import contextlib
import logging
import sys
import time

import click
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask.cli import ScriptInfo, with_appcontext
from flask_migrate import upgrade
from flask_migrate.cli import db as migrations
from werkzeug.serving import run_simple

from loyalty import auth, clock, create_app
from loyalty import demo as world
from loyalty.bulk_awards import service as award_service
from loyalty.errors import LoyaltyError
from loyalty.extensions import db
from loyalty.jobs import registry, runner
from loyalty.jobs import scheduler as schedules
from loyalty.members import importer
from loyalty.members.privacy import erase_member
from loyalty.members.service import phone_duplicates
from loyalty.points.service import seed_rules
from loyalty.points.verify import broken_accounts
from loyalty.segments import figures
from loyalty.staff import service as staff_service
from loyalty.tiers.service import seed_tiers
from loyalty.config import settings


@click.group(help="Loyalty points and membership tiers.",
             context_settings={"obj": ScriptInfo(create_app=create_app, set_debug_flag=False,
                                                 load_dotenv_defaults=False)})
def main():
    pass


def commands():
    migrations.help = "Database migrations (Alembic): `loyalty db upgrade` on each deployment."
    return [serve, api_keys, ledger, jobs, scheduler, members, import_data, bulk_awards, demo, staff, migrations]


def prepare_database():
    """Bring an embedded (SQLite) database to the newest schema; seed defaults on any database."""
    if db.engine.dialect.name == "sqlite":
        migrate_to_head()
    seed_rules()
    seed_tiers()
    if not auth.has_active_admin_key():
        _, plaintext = auth.create_key("admin", name="first admin key", actor="loyalty serve")
        click.echo("Created the first admin API key. It is shown only this once; keep it safe:")
        click.echo(plaintext)


def migrate_to_head():
    """Upgrade only when the schema is behind: a start with nothing to migrate prints nothing."""
    head = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config()).get_current_head()
    quiet = logging.getLogger("alembic.runtime.migration")
    level, quiet.level = quiet.level, logging.WARNING  # "Context impl SQLiteImpl." on every start
    try:
        with db.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        quiet.setLevel(level)
    if current == head:
        return
    upgrade()
    click.echo(f"Database migrated from {current or 'empty'} to revision {head}.")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--debug/--no-debug", default=False)
@with_appcontext
def serve(host, port, debug):
    """Run the development server (SQLite: migrates and seeds on first start)."""
    prepare_database()
    click.echo(f"Serving on http://{host}:{port}/api/v1/docs (development server; use gunicorn in production)")
    run_server(host, port, current_app._get_current_object(), debug)


def run_server(host, port, app, debug):
    run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=debug)


@click.group("api-keys")
def api_keys():
    """Create, list and revoke API keys."""


@api_keys.command("create")
@click.option("--role", required=True, type=click.Choice(auth.ROLES))
@click.option("--store", "store_id", help="The store a POS key acts for (required for pos).")
@click.option("--name", help="A label people recognise, e.g. 'Till 3, Nanjing Road'.")
@with_appcontext
def create_key(role, store_id, name):
    """Create a key; the key itself is printed once, alone on the last line."""
    try:
        key, plaintext = auth.create_key(role, name=name, store_id=store_id)
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Created API key {key.id} ({key.role}{', store ' + key.store_id if key.store_id else ''}).",
               err=False)
    click.echo(plaintext)


@api_keys.command("list")
@with_appcontext
def list_keys():
    """List keys (never the keys themselves: only their first characters)."""
    click.echo("id\trole\tstore\tkey starts\tstate\tname")
    for key in auth.list_keys():
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.id}\t{key.role}\t{key.store_id or '-'}\t{key.key_hint}…\t{state}\t{key.name}")


@api_keys.command("revoke")
@click.argument("key_id", type=int)
@with_appcontext
def revoke_key(key_id):
    """Revoke a key; it stops working at once."""
    try:
        auth.revoke_key(key_id)
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Revoked API key {key_id}.")


@click.group()
def staff():
    """Console sign-in accounts: create, list, disable, reset a password."""


@staff.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(staff_service.ROLES))
@click.option("--name", help="How the console greets them (default: the email's first part).")
@with_appcontext
def create_staff(email, role, name):
    """Create a staff account; its one-time password is printed once, alone on the last line.
    The first sign-in asks for a new password."""
    try:
        member, password = staff_service.create_staff(email, role, name=name)
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Created staff account {member.email} ({member.role}). One-time password (shown once):")
    click.echo(password)


@staff.command("list")
@with_appcontext
def list_staff():
    """Staff accounts and their state (never a password)."""
    click.echo("email\trole\tname\tstate\tlast sign-in")
    for member in staff_service.list_staff():
        state = "disabled" if member.disabled_at else ("locked" if member.locked_until and member.locked_until > clock.now()
                                                       else "active")
        click.echo(f"{member.email}\t{member.role}\t{member.name}\t{state}\t{_when(member.last_sign_in_at) if member.last_sign_in_at else '-'}")


@staff.command("disable")
@click.argument("email")
@with_appcontext
def disable_staff(email):
    """Disable an account; its sessions end at once."""
    try:
        staff_service.disable_staff(email)
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Disabled {staff_service.normalise_email(email)}.")


@staff.command("reset-password")
@click.argument("email")
@with_appcontext
def reset_staff_password(email):
    """A new one-time password (printed once, on the last line); unlocks and re-enables the account."""
    try:
        member, password = staff_service.reset_password(email)
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"New one-time password for {member.email} (shown once; it must be changed at sign-in):")
    click.echo(password)


@click.group()
def ledger():
    """Check the points ledger."""


@ledger.command("verify")
@with_appcontext
def verify():
    """Check every account's invariants and the reports' running sums; exit 1 if any is broken."""
    broken = broken_accounts()
    for item in broken:
        click.echo(f"member {item.member_id}: {item.problem}")
    sums = figures.disagreements()
    for sentence in sums:
        click.echo(f"reports: {sentence}")
    if broken or sums:
        raise SystemExit(1)
    click.echo("Ledger OK: every account agrees with its lots and entries.")
    click.echo("Reports OK: the running sums agree with the members, accounts, lots and entries.")


@click.group()
def jobs():
    """Run the scheduled jobs by hand."""


@jobs.command("list")
@with_appcontext
def list_jobs():
    """The jobs, with when they run (cron, in the deployment's time zone) and their last run."""
    last = runner.last_runs()
    click.echo("job\tschedule\tlast run\tdescription")
    for job in registry.JOBS:
        run = last.get(job.id)
        ran = f"last run {run.as_of} {run.outcome}" if run else "never run"
        click.echo(f"{job.id}\t{schedules.schedule_of(current_app, job)}\t{ran}\t{job.description}")


@jobs.command("run")
@click.argument("job_id")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="The local day to run for (default: today in LOYALTY_TIMEZONE).")
@with_appcontext
def run_job(job_id, as_of):
    """Run one job once, as of a day; a progress bar on a terminal, a summary line at the end.

    If another runner holds the job's lock, says so and exits 0 without doing anything."""
    job = registry.get(job_id)
    if job is None:
        known = ", ".join(j.id for j in registry.JOBS)
        raise click.ClickException(f"No job {job_id!r}; the jobs are: {known}.")
    day = as_of.date() if as_of else clock.local_date(clock.now(), settings().timezone)
    started = time.monotonic()
    try:
        if sys.stdout.isatty():
            with click.progressbar(length=job.total() or 1, label=f"{job.id} as of {day}") as bar:
                record = runner.run(job, day, progress=bar.update)
        else:
            record = runner.run(job, day)
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    if record.outcome == "skipped":
        click.echo(f"{job.id} as of {day}: skipped, another runner holds its lock; nothing was done.")
        return
    counts = ", ".join(f"{key} {value}" for key, value in record.summary.items())
    click.echo(f"{job.id} as of {day}: {counts} in {time.monotonic() - started:.1f} s")


@click.group()
def members():
    """Check the members; erase one's personal data."""


@members.command("duplicates")
@with_appcontext
def member_duplicates():
    """Open members who share a phone number (left by the E.164 migration) and open members whose phone
    is not a valid number. Merge each pair with POST /members/{first_id}/merge {"from_member_id": second_id}."""
    shared, invalid = phone_duplicates()
    click.echo("phone\tfirst_id\tfirst_member_no\tfirst_joined_at\tsecond_id\tsecond_member_no\tsecond_joined_at")
    for pair in shared:
        click.echo("\t".join(str(value) for value in (
            pair.phone, pair.first.id, pair.first.member_no, _when(pair.first.joined_at),
            pair.second.id, pair.second.member_no, _when(pair.second.joined_at))))
    if invalid:
        click.echo("\nNot valid phone numbers (correct them with PATCH /members/{id}):")
        click.echo("member_id\tmember_no\tphone\tjoined_at")
        for member in invalid:
            click.echo(f"{member.id}\t{member.member_no}\t{member.phone}\t{_when(member.joined_at)}")
    click.echo(f"{len(shared)} pairs share a phone number; {len(invalid)} phones are not valid numbers.")


@members.command("erase")
@click.argument("member_id", type=int)
@click.option("--reason", required=True, help="Why: the member's request and its date, for the audit log.")
@with_appcontext
def member_erase(member_id, reason):
    """Erase a member's personal data for good (the ledger stays with the member number)."""
    try:
        member = erase_member(member_id, reason, actor="loyalty members erase (cli)")
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Member {member.id} ({member.member_no}): personal data erased.")


@click.group("import")
def import_data():
    """Bring members and balances over from a previous system."""


@import_data.command("members")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check every row (against the database too) and write nothing.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False),
              help="Where the rejected rows go (default: FILE.rejects.csv beside the file).")
@click.option("--no-webhooks", is_flag=True,
              help="Queue no member.created webhook events for the imported members (by default each is one, "
                   "marked \"imported\": true, for the subscriptions that want member.created).")
@with_appcontext
def import_members(path, dry_run, rejects_path, no_webhooks):
    """Import members from a CSV file with the columns channel, external_id, name, phone, email,
    birthday, points, points_expire_at, tier. Each row once by (channel, external_id): a second run,
    or a run after one was stopped, changes nothing already done. Rejected rows go to a CSV with the
    reason; a summary at the end."""
    rejects_path = rejects_path or importer.rejects_path_for(path)
    started = time.monotonic()
    with open(rejects_path, "w", encoding="utf-8", newline="") as rejects, contextlib.ExitStack() as stack:
        progress = None
        if sys.stdout.isatty():
            bar = stack.enter_context(click.progressbar(length=importer.count_rows(path) or 1,
                                                        label=f"Importing {path}"))
            progress = bar.update
        try:
            summary = importer.import_members(path, rejects, dry_run=dry_run, progress=progress,
                                              webhooks=not no_webhooks)
        except importer.ImportFileError as error:
            raise click.ClickException(str(error)) from None
    what = "would be imported (dry run: nothing was written)" if dry_run else "imported"
    click.echo(f"{summary.rows} rows: {summary.imported} {what}, {summary.already_there} already here, "
               f"{summary.rejected} rejected; {summary.points} opening points; "
               f"{time.monotonic() - started:.1f} s.")
    if summary.events:
        click.echo(f"{summary.events} member.created webhook events queued (--no-webhooks queues none).")
    if summary.rejected:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.reasons.items()))
        click.echo(f"Rejected rows ({reasons}) are in {rejects_path}.")


@click.group("bulk-awards")
def bulk_awards():
    """Bulk awards queued by marketing (POST /api/v1/bulk-awards): cancel one, or retry one that failed."""


@bulk_awards.command("cancel")
@click.argument("award_id", type=int)
@click.option("--reason", required=True, help="Why it is cancelled (audit-logged, and shown as the award's error).")
@with_appcontext
def cancel_bulk_award(award_id, reason):
    """Stop an award that is not done: nobody is credited after this; members already credited keep
    their points."""
    try:
        award = award_service.cancel_award(award_id, reason, actor="loyalty bulk-awards cancel (cli)")
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Bulk award {award.id} ({award.award_no}) cancelled: {award.awarded} of {award.members} members "
               "had been credited and keep their points; nobody else will be.")


@bulk_awards.command("retry")
@click.argument("award_id", type=int)
@with_appcontext
def retry_bulk_award(award_id):
    """Queue again an award that failed its last attempt (after fixing the cause); members already
    credited are not credited again."""
    try:
        award = award_service.retry_award(award_id, actor="loyalty bulk-awards retry (cli)")
    except LoyaltyError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Bulk award {award.id} ({award.award_no}) queued again: {award.members - award.awarded} members "
               "left; the bulk_awards.run job takes it up within a minute.")


def _when(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command()
@with_appcontext
def scheduler():
    """Run the scheduled jobs on their cron times, in this process, until stopped."""
    # APScheduler logs every job as it is added and every run it starts and ends; the echo below and
    # jobs.runner's one line per run say the same, so only its warnings and errors are kept.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    app = current_app._get_current_object()
    for job in registry.JOBS:
        click.echo(f"scheduled {job.id} at '{schedules.schedule_of(app, job)}' ({settings().timezone})")
    schedules.build(app).start()


@click.command()
@click.option("--members", default=2000, show_default=True, type=click.IntRange(1, 100_000),
              help="How many members the world has.")
@click.option("--seed", default=1, show_default=True, type=int, help="The same seed makes the same world.")
@click.option("--force", is_flag=True, help="Add the demo world to a database that has other members.")
@with_appcontext
def demo(members, seed, force):
    """Fill an empty database with a believable year: members, purchases, refunds, activities,
    referrals, rewards, tags; then the nightly jobs. A second run changes nothing."""
    prepare_database()
    started, bars = time.monotonic(), []
    with contextlib.ExitStack() as stack:
        def start(total):
            if sys.stdout.isatty():
                label = f"Demo world ({members} members, seed {seed})"
                bars.append(stack.enter_context(click.progressbar(length=total, label=label)))
        try:
            report = world.fill(seed, members, force=force, start=start,
                                progress=lambda count: bars and bars[0].update(count))
        except LoyaltyError as error:
            raise click.ClickException(error.message) from None
    for line in world.report_lines(report, world.summary(), time.monotonic() - started):
        click.echo(line)


for _command in commands():
    main.add_command(_command)
