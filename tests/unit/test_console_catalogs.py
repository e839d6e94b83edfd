"""Every message the console shows has a Chinese translation in the compiled catalog the package
ships, and the catalogs are up to date with the code (python scripts/translations_zh.py)."""
import os

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONSOLE = os.path.join(ROOT, "loyalty", "console")
TRANSLATIONS = os.path.join(ROOT, "loyalty", "translations")


def messages_in_the_code():
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            CONSOLE, method_map=[("**.py", "python"), ("**/templates/**.html", "jinja2")],
            keywords={"_": None, "gettext": None, "lazy_gettext": None, "ngettext": (1, 2)}):
        found.add(message if isinstance(message, str) else message[0])
    return found


def compiled(locale):
    with open(os.path.join(TRANSLATIONS, locale, "LC_MESSAGES", "messages.mo"), "rb") as f:
        return {message.id: message.string for message in read_mo(f) if message.id}


def test_every_console_message_has_a_chinese_translation_in_the_compiled_catalog():
    code, zh = messages_in_the_code(), compiled("zh")
    assert len(code) > 200
    missing = sorted(message for message in code if not zh.get(message))
    assert missing == [], "run python scripts/translations_zh.py after adding the Chinese to its table"


def test_both_catalogs_ship_compiled():
    for locale in ("zh", "en"):  # English shows the messages as written (an empty catalog)
        assert os.path.getsize(os.path.join(TRANSLATIONS, locale, "LC_MESSAGES", "messages.mo")) > 0


def test_the_navigation_in_chinese():
    zh = compiled("zh")
    assert [zh[label] for label in ("Dashboard", "Members", "Sign in")] == ["仪表盘", "会员", "登录"]
