"""Screenshots of the console for the README: docs/console-dashboard.png and docs/console-member.png,
over `loyalty demo` data, in a real browser (Debian's Chromium through Playwright; nothing is
downloaded).

    .venv/bin/python scripts/console_screenshots.py [--members 2000] [--lang zh|en]

A throw-away SQLite database in a temporary folder: `loyalty demo` fills it, an admin staff account
is made, the app is served on 127.0.0.1 by werkzeug in a thread, and Chromium signs in and takes
the pictures of the dashboard and of the member with the longest history."""
import argparse
import os
import subprocess
import sys
import tempfile
import threading

import sqlalchemy as sa
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "screenshots only"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--lang", choices=("zh", "en"), default="zh")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="loyalty-screens-")
    os.environ["LOYALTY_DATABASE_URL"] = "sqlite:///" + os.path.join(folder, "demo.sqlite")
    loyalty = os.path.join(os.path.dirname(sys.executable), "loyalty")
    subprocess.run([loyalty, "demo", "--members", str(args.members)], check=True, stdout=subprocess.DEVNULL)
    once = subprocess.run([loyalty, "staff", "create", "--email", "admin@example.com", "--role", "admin",
                           "--name", "Admin"], check=True, capture_output=True, text=True).stdout.split()[-1]

    # Imported here, after LOYALTY_DATABASE_URL names the throw-away database.
    from loyalty import create_app  # noqa: PLC0415
    from loyalty.extensions import db  # noqa: PLC0415
    from loyalty.points.models import Entry  # noqa: PLC0415
    from loyalty.staff import service as staff  # noqa: PLC0415

    app = create_app()
    with app.app_context():
        account = staff.sign_in("admin@example.com", once)
        staff.change_password(account.id, once, PASSWORD, PASSWORD)
        busiest = db.session.execute(sa.select(Entry.member_id).group_by(Entry.member_id)
                                     .order_by(sa.func.count().desc()).limit(1)).scalar()
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 900})
        page.goto(f"/console/sign-in?lang={args.lang}")
        page.fill("#f-email", "admin@example.com")
        page.fill("#f-password", PASSWORD)
        page.click("form button[type=submit]")
        page.wait_for_url(f"{base}/console/")
        page.wait_for_timeout(800)  # the charts draw after the page loads
        page.screenshot(path=os.path.join(args.out, "console-dashboard.png"), full_page=True)
        page.goto(f"/console/members/{busiest}")
        page.screenshot(path=os.path.join(args.out, "console-member.png"), full_page=True)
        browser.close()
    server.shutdown()
    print(f"Wrote {args.out}/console-dashboard.png and console-member.png (member {busiest}).")


if __name__ == "__main__":
    main()
