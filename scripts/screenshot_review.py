"""Make the README's screenshots of `scanner serve`: scan samples/ into a fresh SQLite database, serve it, and
photograph the queue page, one item page and the grid with Debian's headless Chromium (Selenium, system chromedriver).

    .venv/bin/python scripts/screenshot_review.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, server: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Return once the server accepts connections."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if server.poll() is not None:
                raise SystemExit("scanner serve exited early") from None
            time.sleep(0.3)
    raise SystemExit("scanner serve did not start")


def main() -> None:
    """Scan, serve, photograph."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    scanner = str(Path(sys.executable).parent / "scanner")
    work = Path(tempfile.mkdtemp(prefix="review-shot-"))
    env = {**os.environ, "SCANNER_DATABASE_URL": f"sqlite:///{work / 'scan.db'}", "SCANNER_CACHE_DIR": str(work)}
    env.pop("SCANNER_BROKER_URL", None)
    subprocess.run([scanner, "submit", str(ROOT / "samples")], env=env, check=True)
    port = free_port()
    server = subprocess.Popen([scanner, "serve", "--port", str(port), "--reviewer", "sam"], env=env)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        wait_for(port, server)
        driver.get(f"http://127.0.0.1:{port}/jobs/1")
        time.sleep(2)  # thumbnails are made on first request
        driver.save_screenshot(str(args.out / "review-queue.png"))
        driver.find_element(By.ID, "start").click()
        time.sleep(6)  # the heatmap loads the model once
        driver.save_screenshot(str(args.out / "review-item.png"))
        driver.get(f"http://127.0.0.1:{port}/jobs/1/grid?reviewed=no")
        time.sleep(2)
        tiles = driver.find_elements(By.CSS_SELECTOR, "#grid .tile")
        for tile in tiles[:3]:  # three selected, the fourth focused
            tile.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
        if len(tiles) > 3:
            driver.execute_script("arguments[0].focus()", tiles[3])
        driver.save_screenshot(str(args.out / "review-grid.png"))
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=20)
    print(f"wrote review-queue.png, review-item.png and review-grid.png in {args.out}")


if __name__ == "__main__":
    main()
