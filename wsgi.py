"""The WSGI entry point for gunicorn: `gunicorn wsgi:app`."""
import gc

from loyalty import create_app

app = create_app()
# What is built by now (the app, SQLAlchemy's mappers and compiled statements, the schemas: some
# 170 000 objects) lives as long as the process. Left to the collector, every full collection walks
# all of it: 100-150 ms with the GIL held, every thread of the worker stalled (the p99 at low load,
# issue 20). Frozen, a full collection walks only what requests made since.
gc.collect()
gc.freeze()
