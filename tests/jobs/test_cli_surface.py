"""What an operator sees of the `loyalty` command: our commands only, quiet starts, headed lists."""
import logging

from click.testing import CliRunner

from loyalty.cli import main


def test_help_lists_our_commands_and_none_of_flasks():
    result = CliRunner().invoke(main, ["--help"])

    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands:")[1].split()
    for ours in ("api-keys", "db", "jobs", "ledger", "scheduler", "serve"):
        assert ours in commands
    for flasks in ("run", "routes", "shell"):
        assert flasks not in commands
    options = result.output.split("Options:")[1].split("Commands:")[0]
    assert "--env-file" not in options and "--app" not in options and "--debug" not in options


def test_flasks_own_commands_are_not_there():
    result = CliRunner().invoke(main, ["routes"])

    assert result.exit_code != 0
    assert "No such command 'routes'" in result.output


def test_a_start_with_nothing_to_migrate_prints_no_alembic_lines(app, runner, monkeypatch, caplog):
    monkeypatch.setattr("loyalty.cli.run_server", lambda *args: None)
    runner.invoke(args=["serve"])  # the first start may migrate (SQLite) and creates the admin key
    caplog.clear()

    with caplog.at_level(logging.INFO):
        result = runner.invoke(args=["serve"])

    assert result.exit_code == 0, result.output
    assert [r for r in caplog.records if r.name.startswith("alembic")] == []
    assert "alembic" not in result.output and "Database migrated" not in result.output


def test_job_and_key_lists_start_with_a_header(runner):
    jobs = runner.invoke(args=["jobs", "list"]).output.splitlines()
    keys = runner.invoke(args=["api-keys", "list"]).output.splitlines()

    assert jobs[0].split("\t") == ["job", "schedule", "last run", "description"]
    assert jobs[1].startswith("points.")
    assert keys[0].split("\t") == ["id", "role", "store", "key starts", "state", "name"]


def test_the_scheduler_announces_each_job_once(runner, monkeypatch, caplog):
    from apscheduler.schedulers.background import BackgroundScheduler

    from loyalty.jobs import registry, scheduler

    real_build = scheduler.build

    class StartsAndStops:
        def __init__(self, app):
            self.scheduler = real_build(app, BackgroundScheduler)

        def start(self):
            self.scheduler.start()
            self.scheduler.shutdown(wait=False)

    monkeypatch.setattr(scheduler, "build", StartsAndStops)
    with caplog.at_level(logging.INFO):
        result = runner.invoke(args=["scheduler"])

    assert result.exit_code == 0, result.output
    for job in registry.JOBS:
        said = result.output.count(job.id) + sum(job.id in r.getMessage() or job.description in r.getMessage()
                                                 for r in caplog.records)
        assert said == 1, job.id
