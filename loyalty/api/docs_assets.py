"""Swagger UI's files for `/api/v1/docs`, served by us from the pinned `swagger-ui-bundle` package.

A shop's intranet has no internet: the docs page must not fetch its script and styles from a CDN."""
from flask import Blueprint, send_from_directory
from swagger_ui_bundle import swagger_ui_path

URL = "/api/v1/docs/assets/"  # OPENAPI_SWAGGER_UI_URL (config.API_SETTINGS) points here

blp = Blueprint("docs_assets", __name__)


@blp.route(URL + "<path:filename>")
def asset(filename):
    """One file of the bundle; send_from_directory refuses paths that leave its folder (404)."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
