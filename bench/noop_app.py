"""The framework's ceiling for bench/pos_credit.py: a Flask app whose one route does nothing.

POST /noop reads the JSON body (as the real endpoint must) and answers {"ok": true}. It runs
under exactly the gunicorn settings of the real service, so the ratio service / no-op is the
share of the framework's budget the purchase path leaves unused. Not part of the service.
"""
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/noop")
def noop():
    request.get_json(silent=True)
    return jsonify(ok=True), 201


@app.get("/noop")
def noop_get():
    """The ceiling for a read (bench/hot_paths.py): a GET answered with a small JSON document."""
    return jsonify(ok=True)
