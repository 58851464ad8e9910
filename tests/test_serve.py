"""`scanner serve`: the review app on real SQLite and PostgreSQL, via Starlette's test client and a real browser."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from PIL import Image
from sqlalchemy import func, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from scanner.cli import app as cli_app
from scanner.connect import SetupError
from scanner.db import Decision, Hold, Item, Verdict
from scanner.moderation.queue import decide
from scanner.moderation.serve import ServeConfig, check_binding, create_app
from scanner.pipeline.submit import open_database, submit
from scanner.settings import Settings
from tests.conftest import make_settings, settings_env
from tests.imaging import encode, noisy_image
from tests.support import browser, scanned_job

HOSTILE_NAME = "<img src=x onerror=window.pwned=1>.png"


def review_job(settings: Settings, folder: Path) -> int:
    """A finished job: 6 smooth and 6 noisy images, one broken file and one with markup in its name."""
    return scanned_job(settings, folder, pairs=6, seed=300, extra={HOSTILE_NAME: encode(noisy_image(399, 32))})


def client_for(settings: Settings, tmp_path: Path, config: ServeConfig | None = None) -> TestClient:
    """A test client on a fresh app (its own sessions) over the settings' database."""
    app = create_app(settings, open_database(settings), config or ServeConfig(reviewer="alice"), tmp_path / "cache")
    return TestClient(app, base_url="http://127.0.0.1:8800")


def csrf_and_seen(page: str) -> tuple[str, str]:
    """The CSRF token and the `seen` decision id in an item page's decision form."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    seen = re.search(r'name="seen" value="(\d+)"', page)
    assert csrf and seen, page[:500]
    return csrf.group(1), seen.group(1)


def decisions(settings: Settings, item_id: int) -> list[tuple[str, str]]:
    """(decision, reviewer) rows of an item, oldest first."""
    with open_database(settings)() as session:
        rows = session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id))
        return [(row.decision, row.reviewer) for row in rows]


def queue_ids(page: str) -> list[int]:
    """Item ids in the order the queue page lists them."""
    return [int(i) for i in re.findall(r'<td><a href="/items/(\d+)\?', page)]


def verdicts_by_id(settings: Settings, job_id: int) -> dict[int, tuple[float | None, str | None, str | None]]:
    """Each item's (score, label, error code); score and label None when it has no verdict."""
    with open_database(settings)() as session:
        rows = session.execute(
            select(Item.id, Verdict.score, Verdict.label, Item.error_code)
            .outerjoin(Verdict, Item.verdict_id == Verdict.id)
            .where(Item.job_id == job_id)
        )
        return {item_id: (score, label, code) for item_id, score, label, code in rows}


def test_queue_orders_flagged_first_and_filters(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    verdicts = verdicts_by_id(settings, job_id)
    scores = {i: v[0] for i, v in verdicts.items()}
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    listed = queue_ids(page.text)
    assert sorted(listed) == sorted(scores)
    expected = sorted(scores, key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
    assert listed == expected  # by score, highest first; the broken file (no score) last
    flagged = queue_ids(client.get(f"/jobs/{job_id}?label=fake").text)
    assert flagged == [i for i in expected if verdicts[i][1] == "fake"] and 0 < len(flagged) < len(listed)
    errors = queue_ids(client.get(f"/jobs/{job_id}?error=any").text)
    assert [scores[i] for i in errors] == [None]
    code = verdicts[errors[0]][2]
    assert code and queue_ids(client.get(f"/jobs/{job_id}?error={code}").text) == errors
    assert queue_ids(client.get(f"/jobs/{job_id}?min=0.999999&max=1").text) == [
        i for i in expected if scores[i] is not None and scores[i] >= 0.999999
    ]
    bad = client.get(f"/jobs/{job_id}?label=maybe")
    assert bad.status_code == 400 and "label must be fake or real" in bad.text
    assert client.get("/jobs/999999").status_code == 404
    small_pages = queue_ids(client.get(f"/jobs/{job_id}?page=99").text)
    assert small_pages == listed  # one page only: a page past the end shows the last
    assert f"<code>{code}</code>" in client.get(f"/jobs/{job_id}/errors").text


def test_keyboard_flow_records_decisions_and_moves_on(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    start = client.get(f"/jobs/{job_id}/next?label=fake", follow_redirects=False)
    assert start.status_code == 303
    first = int(re.search(r"/items/(\d+)", start.headers["location"]).group(1))  # type: ignore[union-attr]
    page = client.get(start.headers["location"])
    assert page.status_code == 200 and 'data-key="f"' in page.text
    csrf, seen = csrf_and_seen(page.text)
    sent = client.post(
        f"/items/{first}/decision?label=fake", data={"csrf": csrf, "seen": seen, "decision": "fake"},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303 and f"after={first}" in sent.headers["location"]
    assert decisions(settings, first) == [("fake", "alice")]
    following = client.get(sent.headers["location"], follow_redirects=False)
    assert following.status_code == 303
    second = int(re.search(r"/items/(\d+)", following.headers["location"]).group(1))  # type: ignore[union-attr]
    assert second != first
    flagged = queue_ids(client.get(f"/jobs/{job_id}?label=fake").text)
    assert flagged.index(second) == flagged.index(first) + 1  # the next unreviewed flagged item in queue order
    unreviewed = queue_ids(client.get(f"/jobs/{job_id}?label=fake&reviewed=no").text)
    assert first not in unreviewed and second in unreviewed
    live = {job["job_id"]: job for job in client.get("/api/jobs").json()}
    assert live[job_id]["reviewed"] == 1 and live[job_id]["flagged"] == len(flagged)
    out = tmp_path / "labels"
    exported = CliRunner().invoke(
        cli_app, ["export-labels", str(job_id), "--out", str(out)], env=settings_env(settings)
    )
    assert exported.exit_code == 0, exported.output
    assert len(list((out / "fake").iterdir())) == 1 and not (out / "real").exists()  # the browser's decision


def test_second_reviewer_sees_the_first_decision_instead_of_overwriting_it(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    app = create_app(settings, open_database(settings), ServeConfig(reviewer="shared"), tmp_path / "cache")
    alice, bob = TestClient(app, base_url="http://127.0.0.1"), TestClient(app, base_url="http://127.0.0.1")
    item_id = queue_ids(alice.get(f"/jobs/{job_id}").text)[0]
    alice_csrf, alice_seen = csrf_and_seen(alice.get(f"/items/{item_id}").text)
    bob_csrf, bob_seen = csrf_and_seen(bob.get(f"/items/{item_id}").text)
    assert alice_seen == bob_seen == "0" and alice_csrf != bob_csrf
    first = alice.post(f"/items/{item_id}/decision", data={"csrf": alice_csrf, "seen": alice_seen, "decision": "fake"})
    assert first.status_code == 200  # followed to the next item
    late = bob.post(f"/items/{item_id}/decision", data={"csrf": bob_csrf, "seen": bob_seen, "decision": "real"})
    assert late.status_code == 409 and 'id="conflict"' in late.text and "<b>fake</b>" in late.text
    assert decisions(settings, item_id) == [("fake", "shared")]
    csrf, seen = csrf_and_seen(late.text)  # the conflict page shows the new state: deciding again is deliberate
    again = bob.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": "real"})
    assert again.status_code == 200
    assert decisions(settings, item_id) == [("fake", "shared"), ("real", "shared")]
    page = alice.get(f"/items/{item_id}").text
    assert page.index("<b>fake</b>") < page.index("<b>real</b>")  # the history, oldest first


def test_undo_retracts_a_reviewers_own_last_decision_and_keeps_it_in_the_history(
    settings: Settings, tmp_path: Path
) -> None:
    from scanner.moderation.reports import iter_decision_rows

    job_id = review_job(settings, tmp_path / "in")
    alice = client_for(settings, tmp_path)
    bob_app = create_app(settings, open_database(settings), ServeConfig(reviewer="bob"), tmp_path / "cache-bob")
    bob = TestClient(bob_app, base_url="http://127.0.0.1:8800")
    item_id = queue_ids(alice.get(f"/jobs/{job_id}").text)[0]
    for choice in ("real", "fake"):
        csrf, seen = csrf_and_seen(alice.get(f"/items/{item_id}").text)
        moved = alice.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": choice})
    assert moved.status_code == 200 and f"Recorded fake on item {item_id}." in moved.text  # the toast, next page
    fake_id = int(re.search(r'action="/decisions/(\d+)/undo', moved.text).group(1))  # type: ignore[union-attr]
    refused = bob.post(f"/decisions/{fake_id}/undo", data={"csrf": csrf_and_seen(bob.get(f"/items/{item_id}").text)[0]})
    assert refused.status_code == 409 and "not one of yours" in refused.text
    undone = alice.post(f"/decisions/{fake_id}/undo", data={"csrf": csrf})
    assert undone.status_code == 200 and f"/items/{item_id}" in str(undone.url)
    assert "no longer counts" in undone.text and "(undone by alice" in undone.text
    assert decisions(settings, item_id) == [("real", "alice"), ("fake", "alice")]  # nothing deleted
    with open_database(settings)() as session:
        rows = {row["decision"]: row for row in iter_decision_rows(session, job_id)}
    assert rows["fake"]["retracted_by"] == "alice" and not rows["fake"]["latest"] and rows["real"]["latest"]
    assert csrf_and_seen(undone.text)[1] == str(rows["real"]["decision_id"])  # the real counts again
    again = alice.post(f"/decisions/{fake_id}/undo", data={"csrf": csrf})
    assert again.status_code == 409 and "already undone" in again.text
    real_id = rows["real"]["decision_id"]
    csrf_bob, seen = csrf_and_seen(bob.get(f"/items/{item_id}").text)
    bob.post(f"/items/{item_id}/decision", data={"csrf": csrf_bob, "seen": seen, "decision": "unsure"})
    late = alice.post(f"/decisions/{real_id}/undo", data={"csrf": csrf})
    assert late.status_code == 409 and "bob decided unsure on this item after you" in late.text
    other = queue_ids(alice.get(f"/jobs/{job_id}").text)[1]
    csrf, seen = csrf_and_seen(alice.get(f"/items/{other}").text)
    alice.post(f"/items/{other}/decision", data={"csrf": csrf, "seen": seen, "decision": "fake"})
    last = int(re.search(r'action="/decisions/(\d+)/undo', alice.get(f"/items/{item_id}").text).group(1))  # type: ignore[union-attr]
    alice.post(f"/decisions/{last}/undo", data={"csrf": csrf})
    unreviewed = queue_ids(alice.get(f"/jobs/{job_id}?reviewed=no").text)
    assert other in unreviewed and item_id not in unreviewed  # all undone: unreviewed again


def test_the_grid_records_one_decision_on_many_items_and_names_the_conflicts(
    settings: Settings, tmp_path: Path
) -> None:
    job_id = review_job(settings, tmp_path / "in")
    alice = client_for(settings, tmp_path)
    grid = alice.get(f"/jobs/{job_id}/grid?label=fake")
    assert grid.status_code == 200
    tiles = re.findall(r'name="item" value="(\d+):(\d+)"', grid.text)
    flagged = queue_ids(alice.get(f"/jobs/{job_id}?label=fake").text)
    assert [int(item) for item, _ in tiles] == flagged and all(seen == "0" for _, seen in tiles)  # the queue's order
    csrf = re.search(r'name="csrf" value="([^"]+)"', grid.text).group(1)  # type: ignore[union-attr]
    taken = int(tiles[1][0])
    with open_database(settings).begin() as session:  # someone decides on one of them meanwhile
        assert decide(session, taken, "real", "bob", seen=0).recorded
    chosen = [f"{item}:{seen}" for item, seen in tiles[:3]]
    done = alice.post(f"/jobs/{job_id}/bulk?label=fake", data={"csrf": csrf, "decision": "fake", "item": chosen,
                                                               "note": "same generator"})  # fmt: skip
    assert done.status_code == 200 and "/grid?" in str(done.url)
    assert "Recorded fake on 2 items." in done.text and f"Not recorded on item {taken}: someone decided" in done.text
    assert decisions(settings, int(tiles[0][0])) == [("fake", "alice")]
    assert decisions(settings, taken) == [("real", "bob")]  # not overwritten
    other_job = review_job(settings, tmp_path / "other")
    stray = queue_ids(alice.get(f"/jobs/{other_job}").text)[0]
    refused = alice.post(f"/jobs/{job_id}/bulk", data={"csrf": csrf, "decision": "fake", "item": [f"{stray}:0"]})
    assert refused.status_code == 400 and f"not in job {job_id}" in refused.text and decisions(settings, stray) == []
    empty = alice.post(f"/jobs/{job_id}/bulk", data={"csrf": csrf, "decision": "fake"})
    assert empty.status_code == 400 and "no item selected" in empty.text


def test_simultaneous_decisions_on_one_view_record_exactly_one(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    sessions = open_database(settings)
    with sessions() as session:
        item_id = session.scalar(select(Item.id).where(Item.job_id == job_id).order_by(Item.id))
    barrier = threading.Barrier(6)

    def reviewer(name: str) -> bool:
        barrier.wait()
        with sessions.begin() as session:
            return decide(session, item_id, "fake", name, seen=0).recorded

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(reviewer, [f"r{i}" for i in range(6)]))
    assert outcomes.count(True) == 1
    assert len(decisions(settings, item_id)) == 1


def test_state_changes_need_the_csrf_token_and_same_origin(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    item_id = queue_ids(client.get(f"/jobs/{job_id}").text)[0]
    csrf, seen = csrf_and_seen(client.get(f"/items/{item_id}").text)
    missing = client.post(f"/items/{item_id}/decision", data={"seen": seen, "decision": "fake"})
    wrong = client.post(f"/items/{item_id}/decision", data={"csrf": "x" * 43, "seen": seen, "decision": "fake"})
    foreign = client.post(
        f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": "fake"},
        headers={"Origin": "http://evil.example"},
    )  # fmt: skip
    stranger = TestClient(client.app, base_url="http://127.0.0.1:8800")  # no session cookie of its own yet
    cross = stranger.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": "fake"})
    assert [r.status_code for r in (missing, wrong, foreign, cross)] == [403, 403, 403, 403]
    bad_value = client.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": "maybe"})
    assert bad_value.status_code == 400 and "decision must be one of" in bad_value.text
    assert decisions(settings, item_id) == []
    page = client.get("/")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    cookie = page.headers.get("set-cookie") or client.get(f"/items/{item_id}").headers.get("set-cookie", "")
    assert cookie == "" or ("httponly" in cookie.lower() and "samesite=strict" in cookie.lower())


def test_images_only_for_items_in_the_database_and_cached(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    ids = queue_ids(client.get(f"/jobs/{job_id}").text)
    item_id = ids[0]
    thumb = client.get(f"/items/{item_id}/image/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"
    cached = list((tmp_path / "cache").rglob("*-thumb.jpg"))
    assert len(cached) == 1
    with open_database(settings)() as session:
        uri = session.scalar(select(Item.uri).where(Item.id == item_id))
    Path(str(uri)).unlink()  # the source is gone: the cached copy (made once, by sha256) still serves
    assert client.get(f"/items/{item_id}/image/thumb").content == thumb.content
    assert client.get(f"/items/{item_id}/image/large").status_code == 404  # never cached, source gone
    heat = client.get(f"/items/{ids[1]}/image/heatmap")
    assert heat.status_code == 200 and heat.content[:2] == b"\xff\xd8"
    assert client.get(f"/items/{ids[-1]}/image/thumb").status_code == 404  # the broken file has no image
    assert client.get("/items/987654/image/thumb").status_code == 404
    assert client.get(f"/items/{item_id}/image/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/items/..%2F..%2Fetc%2Fpasswd/image/thumb").status_code == 404


def test_text_from_files_is_escaped(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    queue_page = client.get(f"/jobs/{job_id}").text
    assert "<img src=x onerror" not in queue_page and "&lt;img src=x onerror=window.pwned=1&gt;.png" in queue_page
    with open_database(settings)() as session:
        item_id = session.scalar(select(Item.id).where(Item.uri.like("%pwned%")))
    page = client.get(f"/items/{item_id}").text
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=window.pwned=1&gt;" in page


def test_binding_beyond_loopback_needs_tokens(settings: Settings, tmp_path: Path) -> None:
    check_binding(ServeConfig(host="127.0.0.1"))
    check_binding(ServeConfig(host="::1"))
    with pytest.raises(SetupError, match="SCANNER_SERVE_TOKEN"):
        check_binding(ServeConfig(host="0.0.0.0"))
    env = settings_env(settings)
    refused = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "8801"], env=env)
    assert refused.exit_code == 1 and "SCANNER_SERVE_TOKEN" in refused.stderr
    short = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"], env={**env, "SCANNER_SERVE_TOKEN": "abc"})
    assert short.exit_code == 1 and "at least 16 characters" in short.stderr
    reviewers = tmp_path / "reviewers.txt"
    reviewers.write_text("# name:token\ncarol:" + "c" * 24 + "\n")
    check_binding(ServeConfig(host="0.0.0.0", tokens={"c" * 24: "carol"}))


def test_tokens_gate_every_page_and_name_the_reviewer(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    config = ServeConfig(host="0.0.0.0", tokens={"t" * 24: "carol", "s" * 24: None})
    client = client_for(settings, tmp_path, config)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/jobs").status_code == 403
    assert client.get("/items/1/image/thumb", follow_redirects=False).status_code == 303
    login = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
    wrong = client.post("/login", data={"csrf": csrf, "token": "x" * 24})
    assert wrong.status_code == 403
    item_id = 1
    blocked = client.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": "0", "decision": "fake"})
    assert blocked.status_code == 403
    ok = client.post("/login", data={"csrf": csrf, "token": "t" * 24}, follow_redirects=False)
    assert ok.status_code == 303 and "fauxscan_session" in ok.headers["set-cookie"]
    item_id = queue_ids(client.get(f"/jobs/{job_id}").text)[0]
    csrf, seen = csrf_and_seen(client.get(f"/items/{item_id}").text)
    client.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": "real"})
    assert decisions(settings, item_id) == [("real", "carol")]  # the reviewer is the token's, not typed


# ---- a real browser against the real `scanner serve` command ----------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sqlite_settings(tiny_model: Path, tmp_path: Path) -> Settings:
    """Embedded settings on a fresh SQLite file (the browser check runs once)."""
    return make_settings(f"sqlite:///{tmp_path / 'serve.db'}", tiny_model)


@contextlib.contextmanager
def serving(settings: Settings, tmp_path: Path, *args: str, **env: str) -> Iterator[tuple[str, int]]:
    """The installed `scanner serve` on a free loopback port until the block ends: its base URL and process id."""
    port = free_port()
    env = {**os.environ, **settings_env(settings), "SCANNER_CACHE_DIR": str(tmp_path / "cache"), **env}
    command = [str(Path(sys.executable).parent / "scanner"), "serve", "--port", str(port), *args]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture
def served(sqlite_settings: Settings, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`scanner serve` (the installed command) on a free loopback port over a finished job: (base URL, job id)."""
    job_id = review_job(sqlite_settings, tmp_path / "in")
    with serving(sqlite_settings, tmp_path, "--reviewer", "dana") as (base, _):
        yield base, job_id


def raw_request(base: str, method: str, path: str, headers: dict[str, str], body: str = "") -> tuple[int, str, str]:
    """One HTTP request with exactly these headers (Host included): status, Set-Cookie and body."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body.encode()))}.items():
            connection.putheader(name, value)
        connection.endheaders(body.encode())
        response = connection.getresponse()
        return response.status, response.getheader("set-cookie") or "", response.read().decode(errors="replace")
    finally:
        connection.close()


def test_review_with_the_keyboard_in_a_real_browser(
    sqlite_settings: Settings, served: tuple[str, int], tmp_path: Path
) -> None:
    settings = sqlite_settings
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, job_id = served
    driver = browser()
    try:
        driver.get(f"{base}/jobs/{job_id}?label=fake")
        first_link = driver.find_element(By.CSS_SELECTOR, "#queue tbody a")
        first = int(first_link.text)
        first_link.click()
        WebDriverWait(driver, 20).until(lambda d: f"/items/{first}" in d.current_url)
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        )
        original, heat = (driver.find_element(By.CSS_SELECTOR, f"#{name} img") for name in ("original", "heat"))
        assert original.location["y"] == heat.location["y"] and heat.location["x"] > original.location["x"]
        original.click()  # zoom: the original at its own pixels
        at_full_size = ("const i = document.querySelector('#original img'); return i.src.endsWith('/image/full') "
                        "&& i.complete && i.naturalWidth > 0 && i.width === i.naturalWidth")  # fmt: skip
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(at_full_size))
        assert "zoomed" in (driver.find_element(By.ID, "original").get_attribute("class") or "")
        original.click()
        assert "zoomed" not in (driver.find_element(By.ID, "original").get_attribute("class") or "")
        keys = driver.find_element(By.ID, "keys")
        assert not keys.is_displayed()
        driver.find_element(By.TAG_NAME, "body").send_keys("?")  # every key, listed
        WebDriverWait(driver, 5).until(lambda d: keys.is_displayed())
        assert "record unsure" in keys.text and "Enter there records nothing" in keys.text and "undo" in keys.text
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        WebDriverWait(driver, 5).until(lambda d: not keys.is_displayed())
        assert decisions(settings, first) == []
        note = driver.find_element(By.NAME, "note")
        note.click()
        note.send_keys("looks like a real press photo, checked source" + Keys.ENTER)
        time.sleep(1.5)  # a submission would have left the page by now
        assert f"/items/{first}" in driver.current_url and decisions(settings, first) == []  # Enter records nothing
        driver.find_element(By.CSS_SELECTOR, "#decide button.real").click()
        WebDriverWait(driver, 20).until(lambda d: f"/items/{first}?" not in d.current_url)
        assert decisions(settings, first) == [("real", "dana")], (driver.current_url, driver.page_source[:3000])
        driver.get(f"{base}/items/{first}")
        assert "real by dana" in driver.find_element(By.ID, "history").text
        assert "checked source" in driver.find_element(By.ID, "history").text
        driver.find_element(By.TAG_NAME, "body").send_keys("f")  # this page's URL has no query: wait on the rows
        WebDriverWait(driver, 20).until(lambda d: len(decisions(settings, first)) == 2)
        assert decisions(settings, first) == [("real", "dana"), ("fake", "dana")], driver.page_source[:3000]
        moved_to = int(re.search(r"/items/(\d+)", driver.current_url).group(1))  # type: ignore[union-attr]
        assert moved_to != first
        assert driver.find_element(By.ID, "toast").text == f"Recorded fake on item {first}."
        driver.find_element(By.TAG_NAME, "body").send_keys("z")  # undo: the fake stays in the history, undone
        WebDriverWait(driver, 20).until(lambda d: f"/items/{first}?" in d.current_url and "undone=" in d.current_url)
        assert "(undone by dana" in driver.find_element(By.ID, "history").text
        assert decisions(settings, first) == [("real", "dana"), ("fake", "dana")]  # kept, never deleted
        with open_database(settings)() as session:
            retracted = session.scalars(select(Decision.retracted_by).where(Decision.item_id == first)).all()
        assert retracted == [None, "dana"]
        with open_database(settings)() as session:
            hostile = session.scalar(select(Item.id).where(Item.uri.like("%pwned%")))
        driver.get(f"{base}/items/{hostile}")
        assert driver.find_element(By.ID, "source").text.endswith(HOSTILE_NAME)  # shown as text
        assert driver.execute_script("return window.pwned === undefined")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        # Defence in depth: even a script that got into the page would not run under the CSP.
        driver.execute_script(
            "window.blocked = 0; document.addEventListener('securitypolicyviolation', () => window.blocked++);"
            "const s = document.createElement('script'); s.textContent = 'window.pwned = 2';"
            "document.body.appendChild(s);"
        )
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.blocked") > 0)
        assert driver.execute_script("return window.pwned === undefined")
        driver.get(f"{base}/jobs/{job_id}/grid?label=fake&reviewed=no")  # the grid: select the page, decide
        tiles = driver.find_elements(By.CSS_SELECTOR, "#grid .tile")
        chosen = [int(box.get_attribute("value").split(":")[0]) for box in
                  driver.find_elements(By.CSS_SELECTOR, "#grid input[type=checkbox]")]  # fmt: skip
        assert tiles and first not in chosen
        tiles[0].click()
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("a")
        assert driver.find_element(By.ID, "selected-count").text == f"{len(chosen)} selected"
        body.send_keys("f")
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "toast"))
        assert driver.find_element(By.ID, "toast").text == f"Recorded fake on {len(chosen)} items."
        assert all(decisions(settings, item) == [("fake", "dana")] for item in chosen)
        driver.get(f"{base}/jobs/{job_id}")
        screenshot = tmp_path / "queue.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_oversized_or_unsized_forms_are_refused(settings: Settings, tmp_path: Path) -> None:
    client = client_for(settings, tmp_path)
    client.get("/")
    big = client.post("/items/1/decision", content=b"a=" + b"x" * 70_000,
                      headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"decision=fake"

    unsized = client.post("/items/1/decision", content=chunks(),
                          headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert unsized.status_code == 411


def test_two_reviewers_on_one_queue_are_sent_to_different_items(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    app = create_app(settings, open_database(settings), ServeConfig(reviewer="team"), tmp_path / "cache")
    first, second = TestClient(app, base_url="http://127.0.0.1"), TestClient(app, base_url="http://127.0.0.1")
    a = first.get(f"/jobs/{job_id}/next", follow_redirects=False).headers["location"]
    first.get(a)  # first reviewer has it open
    b = second.get(f"/jobs/{job_id}/next", follow_redirects=False).headers["location"]
    assert a.split("?")[0] != b.split("?")[0]
    again = first.get(f"/jobs/{job_id}/next", follow_redirects=False).headers["location"]
    assert again.split("?")[0] == a.split("?")[0]  # one's own open item is not held from oneself


def test_ids_past_the_databases_integers_are_not_found_and_hold_nothing(settings: Settings, tmp_path: Path) -> None:
    """An id over PostgreSQL's INTEGER (or SQLite's) is a 404. Opening one once put it among the items held open,
    which every other reviewer's next-item query carried: their queue failed with a database overflow (500)."""
    job_id = review_job(settings, tmp_path / "in")
    app = create_app(settings, open_database(settings), ServeConfig(reviewer="team"), tmp_path / "cache")
    mallory, alice = TestClient(app, base_url="http://127.0.0.1"), TestClient(app, base_url="http://127.0.0.1")
    for huge_id in (3_000_000_000, 2**70):
        for path in (f"/items/{huge_id}", f"/jobs/{huge_id}", f"/jobs/{huge_id}/errors", f"/jobs/{huge_id}/next",
                     f"/items/{huge_id}/image/thumb"):  # fmt: skip
            assert mallory.get(path, follow_redirects=False).status_code == 404, path
    for query in ("", f"?after={2**70}"):
        sent = alice.get(f"/jobs/{job_id}/next{query}", follow_redirects=False)
        assert sent.status_code == 303 and sent.headers["location"].startswith("/items/"), query


def test_a_rebinding_page_can_neither_read_nor_decide(
    sqlite_settings: Settings, served: tuple[str, int], tmp_path: Path
) -> None:
    """A page at attacker.example whose name was rebound to 127.0.0.1 sends its own Host and Origin."""
    base, job_id = served
    item_id = queue_ids(raw_request(base, "GET", f"/jobs/{job_id}", {"Host": "127.0.0.1"})[2])[0]
    evil = {"Host": "attacker.example:8800", "Origin": "http://attacker.example:8800"}
    status, cookie, body = raw_request(base, "GET", f"/items/{item_id}", evil)
    assert status == 421 and cookie == "" and "csrf" not in body and "DNS-rebinding" in body
    status, cookie, page = raw_request(base, "GET", f"/items/{item_id}", {"Host": "attacker.example:8800"})
    assert status == 421
    # Even with a CSRF token taken from a page it could not read, its post is refused.
    status, cookie, page = raw_request(base, "GET", f"/items/{item_id}", {"Host": "localhost"})
    assert status == 200
    csrf, seen = csrf_and_seen(page)
    form = urlencode({"csrf": csrf, "seen": seen, "decision": "fake"})
    posted = {**evil, "Cookie": cookie.split(";")[0], "Content-Type": "application/x-www-form-urlencoded"}
    assert raw_request(base, "POST", f"/items/{item_id}/decision", posted, form)[0] == 421
    assert decisions(sqlite_settings, item_id) == []
    for host in ("127.0.0.1", f"localhost:{urlsplit(base).port}", "[::1]", "127.0.0.2:1"):
        assert raw_request(base, "GET", "/", {"Host": host})[0] == 200, host
    for host in ("", "attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io", "[::1"):
        assert raw_request(base, "GET", "/", {"Host": host})[0] in (400, 421), host


def test_behind_a_tls_proxy_the_public_origin_is_accepted(sqlite_settings: Settings, tmp_path: Path) -> None:
    """A proxy passing Host review.example.org without X-Forwarded-Proto: the browser's Origin is https."""
    token = "p" * 24
    proxied = {"Host": "review.example.org", "Origin": "https://review.example.org"}

    def log_in(base: str) -> tuple[int, str]:
        status, cookie, page = raw_request(base, "GET", "/login", {"Host": "review.example.org"})
        if status != 200:
            return status, ""
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        headers = {**proxied, "Cookie": cookie.split(";")[0], "Content-Type": "application/x-www-form-urlencoded"}
        form = urlencode({"csrf": csrf, "token": token, "reviewer": "erin"})
        status, cookie, _ = raw_request(base, "POST", "/login", headers, form)
        return status, cookie

    env = {"SCANNER_SERVE_TOKEN": token}
    with serving(sqlite_settings, tmp_path, "--reviewer", "x", **env) as (base, _):
        assert log_in(base)[0] == 421  # an unknown name: refused until the origin is configured
    with serving(sqlite_settings, tmp_path, **env, SCANNER_SERVE_ORIGIN="https://review.example.org") as (base, _):
        status, cookie = log_in(base)
        assert status == 303 and "secure" in cookie.lower(), cookie
        assert raw_request(base, "GET", "/", {"Host": "evil.example"})[0] == 421
    bad = CliRunner().invoke(cli_app, ["serve"], env={**settings_env(sqlite_settings),
                                                      "SCANNER_SERVE_ORIGIN": "review.example.org/path"})  # fmt: skip
    assert bad.exit_code == 1 and "SCANNER_SERVE_ORIGIN must be like" in bad.stderr


def test_anonymous_requests_cannot_push_a_reviewer_out(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every GET /login used to store a session; past MAX_SESSIONS the oldest, a reviewer's, was dropped."""
    monkeypatch.setattr("scanner.moderation.serve.MAX_SESSIONS", 3)  # the limit's size is not what is tested
    job_id = review_job(settings, tmp_path / "in")
    config = ServeConfig(tokens={"t" * 24: "carol"})
    reviewer = client_for(settings, tmp_path, config)
    csrf = re.search(r'name="csrf" value="([^"]+)"', reviewer.get("/login").text).group(1)  # type: ignore[union-attr]
    assert reviewer.post("/login", data={"csrf": csrf, "token": "t" * 24}, follow_redirects=False).status_code == 303
    for _ in range(10):
        TestClient(reviewer.app, base_url="http://127.0.0.1:8800").get("/login")
    assert reviewer.get(f"/jobs/{job_id}", follow_redirects=False).status_code == 200


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory so far (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def test_thumbnails_decode_as_many_images_at_once_as_the_scan_does(sqlite_settings: Settings, tmp_path: Path) -> None:
    """Twelve parallel thumbnail requests for uncached 7900 px PNGs took the serve process from 323 MB to 6.74 GB:
    every request decoded at once. SCANNER_DECODE_THREADS now bounds them, as it bounds the scan's decoding."""
    folder = tmp_path / "large"
    folder.mkdir()
    ramp = Image.linear_gradient("L").resize((4000, 4000))
    for number in range(8):
        Image.merge("RGB", (ramp, ramp.rotate(90 * number), ramp)).save(folder / f"{number}.png", compress_level=1)
    job_id = submit(sqlite_settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(sqlite_settings)() as session:
        item_ids = list(session.scalars(select(Item.id).where(Item.job_id == job_id)))
    peaks = {}
    for threads in ("1", "8"):
        cache = tmp_path / f"cache{threads}"
        with serving(sqlite_settings, tmp_path, SCANNER_DECODE_THREADS=threads, SCANNER_CACHE_DIR=str(cache)) as (
            base, pid,
        ):  # fmt: skip
            start = peak_rss_mib(pid)
            with ThreadPoolExecutor(len(item_ids)) as pool:
                codes = list(
                    pool.map(
                        lambda i: raw_request(base, "GET", f"/items/{i}/image/thumb", {"Host": "127.0.0.1"})[0],
                        item_ids,
                    )
                )
            assert codes == [200] * len(item_ids)
            peaks[threads] = peak_rss_mib(pid) - start
    # Each 16 Mpx image is 46 MiB decoded: eight at once hold several hundred MiB more than one at a time.
    assert peaks["8"] - peaks["1"] > 150, peaks


def test_two_serve_processes_never_hand_out_an_item_held_open(sqlite_settings: Settings, tmp_path: Path) -> None:
    """Holds lived in one process's memory: behind a load balancer, a reviewer on the second process was sent to
    the item open on the first. They are rows now, with an expiry, read by every process."""
    job_id = review_job(sqlite_settings, tmp_path / "in")
    host = {"Host": "127.0.0.1"}

    with serving(sqlite_settings, tmp_path, "--reviewer", "ann") as (first, _), serving(
        sqlite_settings, tmp_path, "--reviewer", "bob"
    ) as (second, _):  # fmt: skip
        opened = []
        for base in (first, second, first):
            connection = http.client.HTTPConnection("127.0.0.1", urlsplit(base).port, timeout=30)
            cookie = {first: "fauxscan_session=ann-browser", second: "fauxscan_session=bob-browser"}[base]
            connection.request("GET", f"/jobs/{job_id}/next", headers={**host, "Cookie": cookie})
            response = connection.getresponse()
            response.read()
            location = response.getheader("location") or ""
            assert response.status == 303 and location.startswith("/items/"), (response.status, location)
            item_path = location.split("?")[0]
            assert raw_request(base, "GET", item_path, {**host, "Cookie": cookie})[0] == 200  # opens it: a hold
            opened.append(item_path)
            connection.close()
    assert opened[0] != opened[1], opened  # bob, on the other process, is sent elsewhere
    assert opened[2] == opened[0]  # ann's own hold does not keep her from her item
    with open_database(sqlite_settings)() as session:
        assert session.scalar(select(func.count()).select_from(Hold)) == 2


def test_an_unreachable_database_is_one_line_and_a_page_that_says_so(
    sqlite_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the database away the app answered a bare 500 and logged 180 lines of traceback a request."""
    from scanner.db import make_engine, session_factory

    dead = sqlite_settings.with_overrides(database_url="postgresql+psycopg://u:pw9@127.0.0.1:1/x")
    sessions = session_factory(make_engine(dead.database_url))
    app = create_app(dead, sessions, ServeConfig(reviewer="eve"), tmp_path / "cache")
    client = TestClient(app, base_url="http://127.0.0.1:8800", raise_server_exceptions=False)
    with caplog.at_level("ERROR"):
        for path in ("/", "/jobs/1", "/items/1", "/api/jobs"):
            page = client.get(path)
            assert page.status_code == 503 and "the database does not answer" in page.text, (path, page.text[:300])
            assert "pw9" not in page.text
    logged = [record for record in caplog.records if record.name == "fauxscan.serve"]
    assert len(logged) == 4 and all(record.exc_info is None and "pw9" not in record.getMessage() for record in logged)
    assert all(record.name == "fauxscan.serve" for record in caplog.records if record.levelname == "ERROR")


@pytest.mark.parametrize(
    ("label", "score", "whole", "patch", "faces", "says"),
    [
        ("fake", 0.9997, 0.9997, None, [0.18], ["Flagged by the whole image (1.00)", "no face alone does"]),
        ("fake", 0.93, 0.41, None, [0.2, 0.93], ["Flagged by face 2 (0.93)", "the whole image (0.41) does not"]),
        ("fake", 0.95, 0.9, None, [0.95], ["Flagged by the whole image (0.90) and by face 1 (0.95)"]),
        ("fake", 0.71, 0.71, None, [], ["no face was found to judge alone", "Borderline: 0.030 over the threshold"]),
        ("real", 0.66, 0.66, None, [0.1], ["Not flagged: the whole image (0.66) is under", "Borderline: 0.020 under"]),
        ("real", 0.12, 0.12, None, [], ["and no face was found"]),
        ("fake", 0.97, 0.05, 0.97, [0.02], ["Flagged by the native patch (0.97)", "no face alone does (face 1: 0.02)"]),
        ("fake", 0.9, 0.1, 0.2, [0.9], ["Flagged by face 1 (0.90)", "the native patch (0.20) do not"]),
        ("real", 0.3, 0.3, 0.1, [], ["Not flagged: the whole image (0.30) and the native patch (0.10) are under"]),
    ],
)
def test_the_verdict_is_explained_by_the_view_that_drove_it(
    label: str, score: float, whole: float, patch: float | None, faces: list[float], says: list[str]
) -> None:
    """A flagged image whose face scored low says the whole image (or its native patch) drove it; 0.66 against 0.68
    is borderline."""
    from scanner.db import Face
    from scanner.moderation.queue import verdict_sentences

    verdict = Verdict(label=label, score=score, whole_score=whole, patch_score=patch, threshold=0.68)
    rows = [Face(rank=rank, score=face_score) for rank, face_score in enumerate(faces)]
    text = " ".join(verdict_sentences(verdict, rows))
    assert all(part in text for part in says), text
    assert ("Borderline" in text) == (abs(score - 0.68) < 0.05)


def test_the_item_page_explains_its_verdict_in_words(settings: Settings, tmp_path: Path) -> None:
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    flagged = queue_ids(client.get(f"/jobs/{job_id}?label=fake").text)
    unflagged = queue_ids(client.get(f"/jobs/{job_id}?label=real").text)
    assert flagged and unflagged
    assert 'class="explained">Flagged by the whole image' in client.get(f"/items/{flagged[0]}").text
    assert 'class="explained">Not flagged: the whole image' in client.get(f"/items/{unflagged[0]}").text


def test_a_decision_after_a_restart_keeps_the_typed_note(settings: Settings, tmp_path: Path) -> None:
    """After a restart the decision got a bare 'log in first' and the typed note was lost. Nothing is recorded
    still, but the login form carries the note back to the item's page."""
    job_id = review_job(settings, tmp_path / "in")
    config = ServeConfig(tokens={"t" * 24: "carol"})
    before = client_for(settings, tmp_path, config)
    csrf = re.search(r'name="csrf" value="([^"]+)"', before.get("/login").text).group(1)  # type: ignore[union-attr]
    before.post("/login", data={"csrf": csrf, "token": "t" * 24})
    item_id = queue_ids(before.get(f"/jobs/{job_id}").text)[0]
    csrf, seen = csrf_and_seen(before.get(f"/items/{item_id}").text)
    restarted = client_for(settings, tmp_path, config)  # a new process: it knows no session
    restarted.cookies = before.cookies
    note = "press photo <b>checked</b> with the agency"
    sent = restarted.post(f"/items/{item_id}/decision", data={"csrf": csrf, "seen": seen, "decision": "real",
                                                               "note": note})  # fmt: skip
    assert sent.status_code == 403 and "your decision was not recorded" in sent.text
    assert "press photo &lt;b&gt;checked&lt;/b&gt;" in sent.text and decisions(settings, item_id) == []
    login_csrf = re.search(r'name="csrf" value="([^"]+)"', sent.text).group(1)  # type: ignore[union-attr]
    form = {"csrf": login_csrf, "token": "t" * 24, "return_to": f"/items/{item_id}", "draft_note": note}
    back = restarted.post("/login", data=form, follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == f"/items/{item_id}"
    page = restarted.get(back.headers["location"]).text
    assert 'id="kept"' in page and 'value="press photo &lt;b&gt;checked&lt;/b&gt; with the agency"' in page
    assert 'id="kept"' not in restarted.get(f"/items/{item_id}").text  # shown once
    fresh = re.search(r'name="csrf" value="([^"]+)"', restarted.get("/login").text).group(1)  # type: ignore[union-attr]
    elsewhere = {**form, "csrf": fresh, "return_to": "https://evil.example/"}
    assert restarted.post("/login", data=elsewhere, follow_redirects=False).headers["location"] == "/"
    assert decisions(settings, item_id) == []


def test_the_queue_filters_by_latest_decision_and_reviewer(settings: Settings, tmp_path: Path) -> None:
    """Escalation needs the 'unsure' items, quality checks the items where a reviewer overruled the model."""
    job_id = review_job(settings, tmp_path / "in")
    client = client_for(settings, tmp_path)
    flagged = queue_ids(client.get(f"/jobs/{job_id}?label=fake").text)
    unsure, overruled, agreed = flagged[:3]
    with open_database(settings).begin() as session:
        first = decide(session, unsure, "fake", "ann", 0)
        decide(session, unsure, "unsure", "zed", first.latest.id if first.latest else 0)  # the latest counts
        decide(session, overruled, "real", "zed", 0)
        decide(session, agreed, "fake", "ann", 0)
    assert queue_ids(client.get(f"/jobs/{job_id}?decided=unsure").text) == [unsure]
    assert queue_ids(client.get(f"/jobs/{job_id}?decided=disagree").text) == [overruled]
    assert queue_ids(client.get(f"/jobs/{job_id}?decided=fake").text) == [agreed]
    assert sorted(queue_ids(client.get(f"/jobs/{job_id}?reviewer=zed").text)) == sorted([unsure, overruled])
    assert queue_ids(client.get(f"/jobs/{job_id}?reviewer=ann&decided=unsure").text) == [unsure]
    bad = client.get(f"/jobs/{job_id}?decided=maybe")
    assert bad.status_code == 400 and "decided must be one of" in bad.text


def test_the_full_decision_history_exports_from_the_app_and_the_report(settings: Settings, tmp_path: Path) -> None:
    import csv
    import io
    import json

    from scanner.moderation.review import add_decision

    job_id = review_job(settings, tmp_path / "in")
    with open_database(settings)() as session:
        first, second = session.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.id).limit(2))
        add_decision(session, first, "fake", "alice", 'looks pasted, "see the ear",\nsecond line')
        add_decision(session, first, "real", "bob", '=HYPERLINK("x") checked the source')
        add_decision(session, second, "unsure", "carol")
        session.commit()
    client = client_for(settings, tmp_path)
    assert f'/jobs/{job_id}/decisions.csv"' in client.get(f"/jobs/{job_id}").text
    download = client.get(f"/jobs/{job_id}/decisions.csv")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [(r["item_id"], r["decision"], r["reviewer"], r["latest"]) for r in rows] == [
        (str(first), "fake", "alice", "False"), (str(first), "real", "bob", "True"),
        (str(second), "unsure", "carol", "True"),
    ]  # fmt: skip
    assert rows[0]["note"] == 'looks pasted, "see the ear",\nsecond line'
    assert rows[1]["note"].startswith("'=HYPERLINK")  # a formula is never a formula in a spreadsheet
    assert all(r["decided_at"].endswith("+00:00") for r in rows)
    as_json = client.get(f"/jobs/{job_id}/decisions.json").json()
    assert as_json["job"]["job_id"] == job_id and [d["decision"] for d in as_json["decisions"]] == [
        "fake",
        "real",
        "unsure",
    ]
    assert client.get(f"/jobs/{job_id}/decisions.xml").status_code == 404
    assert client.get("/jobs/999/decisions.csv").status_code == 404
    cli = CliRunner().invoke(
        cli_app, ["report", str(job_id), "--decisions", "--format", "jsonl"], env=settings_env(settings)
    )
    assert cli.exit_code == 0, cli.output
    assert [json.loads(line)["reviewer"] for line in cli.output.splitlines()] == ["alice", "bob", "carol"]
    table = CliRunner().invoke(cli_app, ["report", str(job_id), "--decisions"], env=settings_env(settings))
    assert "(superseded)" in table.output and "carol" in table.output


def test_search_by_name_jump_to_a_page_and_a_bad_filter_keeps_the_form(settings: Settings, tmp_path: Path) -> None:
    job_id = scanned_job(
        settings, tmp_path / "in", pairs=30, seed=700,
        extra={"Press_Photo%1.png": encode(noisy_image(799, 32)), "pressXphoto.png": encode(noisy_image(798, 32))},
    )  # fmt: skip
    client = client_for(settings, tmp_path)
    found = queue_ids(client.get(f"/jobs/{job_id}?name=press_photo%25").text)
    assert len(found) == 1  # '_' and '%' are letters here, not wildcards; any case
    assert len(queue_ids(client.get(f"/jobs/{job_id}?name=REAL_1").text)) == 11  # real_1, real_10 ... real_19
    first = client.get(f"/jobs/{job_id}?label=fake")
    assert 'id="jump"' in first.text and '<input type="hidden" name="label" value="fake">' in first.text
    second = client.get(f"/jobs/{job_id}?page=2")
    assert "page 2 of 2" in second.text and queue_ids(second.text)
    bad = client.get(f"/jobs/{job_id}?min=0,5&label=fake")
    assert bad.status_code == 400 and 'id="filter-problem"' in bad.text and "min must be a score" in bad.text
    assert 'class="filters"' in bad.text and 'id="queue"' not in bad.text  # the form, cleared; no unfiltered list


def test_the_heatmap_legend_shows_the_palette_the_heatmaps_are_painted_with() -> None:
    from scanner.moderation.explain import legend_stops

    css = (Path(__file__).parents[1] / "scanner" / "moderation" / "static" / "app.css").read_text()
    assert f"linear-gradient(to right, {', '.join(legend_stops())})" in css


def test_face_boxes_are_labelled_in_words_not_only_in_colour() -> None:
    import numpy as np
    from PIL import Image

    from scanner.detector.faces import Box
    from scanner.moderation.images import draw_boxes

    plain = Image.new("RGB", (400, 300), (200, 200, 200))
    boxes = [Box(20, 60, 100, 100), Box(200, 120, 120, 120)]
    outlined = np.asarray(draw_boxes(plain, boxes, [0.9, 0.1], 0.5)).astype(int)
    for box in boxes:  # a label strip with white text sits just above each box
        strip = outlined[box.y - 12 : box.y - 2, box.x + 2 : box.x + 60]
        assert (strip.min(axis=2) > 200).sum() > 10 and (np.abs(strip - 200).sum(axis=2) > 60).mean() > 0.5
