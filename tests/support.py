"""Helpers several test modules share (tests never import each other)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from scanner.db import Item, make_engine
from scanner.pipeline.errors import ERROR_CODES
from scanner.settings import Settings
from tests.httpserver import EXPECTED, HostileServer
from tests.imaging import encode, noisy_image, smooth_image


def items_by_uri(settings: Settings, job_id: int) -> dict[str, Item]:
    """The job's items keyed by uri."""
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        rows = {row.uri: row for row in connection.execute(select(Item).where(Item.job_id == job_id))}
    engine.dispose()
    return rows


def scanned_job(
    settings: Settings, folder: Path, pairs: int = 5, seed: int = 200, extra: dict[str, bytes] | None = None
) -> int:
    """A finished job over `pairs` smooth (real-looking) and noisy (fake-looking) images, one broken file and any
    `extra` files (name -> bytes)."""
    from scanner.pipeline.submit import submit

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(pairs):
        (folder / f"real_{index}.png").write_bytes(encode(smooth_image(seed + index, 32)))
        (folder / f"fake_{index}.png").write_bytes(encode(noisy_image(seed + index, 32)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    return int(submit(settings, [str(folder)], wait=True).summary["job_id"])


def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium, headless, driven by the system chromedriver through Selenium (nothing downloaded)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    assert chromium and chromedriver, "chromium and chromedriver are not installed: scripts/services.sh installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


URL_LIMITS = {"http_timeout": 1.0, "http_retries": 1, "max_file_bytes": 1_000_000}


def check_url_outcomes(settings: Settings, job_id: int, server: HostileServer) -> None:
    """Every hostile route ended with the right status and code."""
    rows = items_by_uri(settings, job_id)
    for path, (status, code) in EXPECTED.items():
        row = rows[server.url(path)]
        assert (row.status, row.error_code) == (status, code), (path, row.error_message)
        assert row.error_code is None or row.error_code in ERROR_CODES
    assert rows[server.url("to-good")].final_url == server.url("good.png")
    assert rows[server.url("good.png")].http_status == 200 and rows[server.url("good.png")].sha256
    assert rows[server.url("missing")].http_status == 404
