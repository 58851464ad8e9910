"""URLs and hostile input: a real HTTP server on 127.0.0.1, the SSRF guard, odd files and a fuzz run."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from scanner.db import Item, Job, Skipped
from scanner.pipeline.errors import ERROR_CODES, ItemError
from scanner.pipeline.fetch import FetchPolicy, address_blocked, fetch_url
from scanner.pipeline.jobs import create_job
from scanner.pipeline.model import model_identity
from scanner.pipeline.scan import ScanContext, scan_batch
from scanner.pipeline.sources import expand_sources
from scanner.pipeline.submit import open_database, submit
from scanner.settings import Settings
from tests.httpserver import EXPECTED, HostileServer
from tests.imaging import corruptions, encode, noisy_image, png_bomb
from tests.support import URL_LIMITS, check_url_outcomes, items_by_uri


def test_urls_on_the_embedded_path(settings: Settings) -> None:
    url_settings = settings.with_overrides(**URL_LIMITS)
    with HostileServer() as server:
        urls = [server.url(path) for path in EXPECTED] + ["ftp://127.0.0.1/x.jpg", "http://[::1"]
        summary = submit(url_settings, urls, wait=True).summary
        check_url_outcomes(url_settings, summary["job_id"], server)
    rows = items_by_uri(url_settings, summary["job_id"])
    assert rows["ftp://127.0.0.1/x.jpg"].error_code == "unsupported_scheme"
    assert rows["http://[::1"].error_code == "invalid_url"
    assert summary["errors_by_code"]["too_large"] == 2


def test_private_addresses_are_refused_by_default(settings: Settings) -> None:
    strict = settings.with_overrides(allow_private_urls=False, **URL_LIMITS)
    with HostileServer() as server:
        urls = [server.url("good.png"), server.url("to-good"), server.url("good.png").replace("127.0.0.1", "localhost")]
        summary = submit(strict, urls, wait=True).summary
        rows = items_by_uri(strict, summary["job_id"])
        assert {row.error_code for row in rows.values()} == {"blocked_address"}
        assert server.server.RequestHandlerClass.hits == {}  # nothing was ever sent to the private server


@pytest.mark.parametrize(
    ("address", "private_allowed", "blocked"),
    [
        ("8.8.8.8", False, False),
        ("2001:4860:4860::8888", False, False),
        ("127.0.0.1", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.1", False, True),
        ("192.168.1.1", False, True),
        ("100.64.0.1", False, True),
        ("::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("::ffff:10.0.0.1", False, True),
        ("fd00::1", False, True),
        ("fe80::1", True, True),
        ("169.254.169.254", True, True),
        ("0.0.0.0", True, True),
        ("224.0.0.1", True, True),
        ("240.0.0.1", True, True),
        ("127.0.0.1", True, False),
        ("::ffff:192.168.0.1", True, False),
        ("::1", True, False),
        ("fd12:3456::1", True, False),
        ("192.0.0.192", False, True),
        ("192.0.0.8", True, True),
        ("fec0::1", False, True),
        ("168.63.129.16", False, True),
        ("168.63.129.16", True, True),
        ("fd00:ec2::254", True, True),
        ("100.100.100.200", True, True),
        ("169.254.0.1", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("2001:db8::1", True, True),
        ("64:ff9b::a9fe:a9fe", True, True),
        ("2002:a9fe:a9fe::1", True, True),
        ("198.18.0.1", True, True),
        ("192.88.99.1", False, True),
    ],
)
def test_address_policy(address: str, private_allowed: bool, blocked: bool) -> None:
    assert address_blocked(address, private_allowed) is blocked


def test_ipv6_loopback_is_fetched_when_private_urls_are_allowed() -> None:
    with HostileServer("::1") as server:
        result = fetch_url(server.url("good.png"), FetchPolicy(allow_private=True, timeout=2, retries=0))
        assert result.status == 200 and result.data.startswith(b"\x89PNG")
        with pytest.raises(ItemError) as caught:
            fetch_url(server.url("good.png"), FetchPolicy(allow_private=False, timeout=2, retries=0))
        assert caught.value.code == "blocked_address"
        assert server.server.RequestHandlerClass.hits["/good.png"] == 1  # the refused fetch never connected


def test_redirect_to_a_blocked_address_is_checked_after_the_redirect() -> None:
    with HostileServer() as server:
        with pytest.raises(ItemError) as caught:
            fetch_url(server.url("to-metadata"), FetchPolicy(allow_private=True, timeout=1, retries=0))
    assert caught.value.code == "blocked_address"


def test_odd_files(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "ok.png").write_bytes(encode(noisy_image(1, 32)))
    (root / "vanishes.png").write_bytes(encode(noisy_image(2, 32)))
    outside = tmp_path / "outside.png"
    outside.write_bytes(encode(noisy_image(3, 32)))
    (root / "link_out.png").symlink_to(outside)
    (root / "link_in.png").symlink_to(root / "ok.png")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "self.jpg").symlink_to(root / "self.jpg")  # a file link to itself: resolving it raises
    (root / "dangling.png").symlink_to(root / "deleted.png")
    os.mkfifo(root / "pipe.jpg")
    big = root / "big.jpg"
    noisy_image(4, 64).resize((6000, 4000)).save(big, quality=80)
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    expansion = expand_sources([str(root), str(root / "pipe.jpg")])
    job_id, _ = create_job(sessions, [str(root)], expansion, version, threshold, "embedded")
    (root / "vanishes.png").unlink()  # gone between submit and scan
    ctx = ScanContext.create(settings.with_overrides(max_file_bytes=20_000_000), sessions)
    with sessions() as session:
        ids = list(session.scalars(select(Item.id).where(Item.job_id == job_id)))
    scan_batch(ctx, job_id, ids)
    ctx.close()
    rows = {Path(uri).name: row for uri, row in items_by_uri(settings, job_id).items()}
    assert rows["ok.png"].status == rows["link_in.png"].status == "done"
    assert rows["vanishes.png"].error_code == "not_found"
    assert "pipe.jpg" not in rows  # never opened: a FIFO, named or walked, is skipped with its reason
    assert (rows["big.jpg"].status, rows["big.jpg"].width, rows["big.jpg"].height) == ("done", 6000, 4000)
    assert "link_out.png" not in rows and "loop" not in str(list(rows))
    with sessions() as session:
        skipped = {Path(p).name: r for p, r in session.execute(select(Skipped.path, Skipped.reason))}
        assert session.get(Job, job_id).finished_at is not None
    assert skipped == {
        "link_out.png": "symlink_outside",
        "pipe.jpg": "fifo",
        "self.jpg": "broken_symlink",
        "dangling.png": "broken_symlink",
    }


def test_size_and_pixel_limits(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(encode(noisy_image(1, 200)))
    (tmp_path / "wide.png").write_bytes(encode(Image.new("RGB", (640, 64), (20, 30, 40))))
    tight = settings.with_overrides(max_file_bytes=50_000, max_pixels=30_000)
    summary = submit(tight, [str(tmp_path)], wait=True).summary
    assert summary["errors_by_code"] == {"too_large": 1, "too_many_pixels": 1}


def test_the_pixel_limit_is_the_scanners_not_pillows() -> None:
    from scanner.detector.preprocess import ImageRejected, decode_image

    claims_95_mpx = png_bomb(10_000, 9_500)  # over Pillow's own 89 Mpx warning, under its 179 Mpx refusal
    with pytest.raises(ImageRejected) as refused:
        decode_image(claims_95_mpx, 256, max_pixels=64_000_000)
    assert refused.value.code == "too_many_pixels" and "exceeds the limit of 64000000" in refused.value.message
    decoded = decode_image(claims_95_mpx, 256, max_pixels=100_000_000)  # a raised limit lets it through
    assert (decoded.width, decoded.height) == (10_000, 9_500)
    with pytest.raises(ImageRejected) as bomb:
        decode_image(png_bomb(20_000, 20_000), 256, max_pixels=500_000_000)
    assert bomb.value.code == "too_many_pixels" and "the limit is 500000000" in bomb.value.message


def test_thin_strips_are_scanned_without_enlarging_the_whole_strip(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1x60000 PNG is a few hundred bytes; enlarging all of it to the 112 px input side would take gigabytes."""
    import numpy as np

    from scanner.detector.preprocess import RESAMPLE, resize_center_crop

    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def recording_resize(image: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        sizes.append(tuple(size))  # type: ignore[arg-type]
        return resize(image, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    for name, size in {"tall.png": (1, 60000), "wide.png": (60000, 1), "thin.png": (3, 20000)}.items():
        Image.new("RGB", size, (90, 120, 150)).save(tmp_path / name)
    summary = submit(settings, [str(tmp_path)], wait=True).summary
    assert (summary["done"], summary["errors"]) == (3, 0)
    assert sizes and max(w * h for w, h in sizes) <= 200_000  # the views only, never the enlarged strip
    rng = np.random.default_rng(0)
    for width, height, exact in ((7, 300, True), (5, 1000, False)):  # enlarged whole: 0.5M pixels, 2.5M pixels
        strip = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for side, kind in ((112, "bilinear"), (128, "bicubic")):
            tall = round(height * side / width)
            enlarged = resize(strip, (side, tall), RESAMPLE[kind])  # the whole strip enlarged, then cropped
            top = (tall - side) // 2
            expected = np.asarray(enlarged.crop((0, top, side, top + side)), dtype=np.int16)
            view = np.asarray(resize_center_crop(strip, side, 256, kind), dtype=np.int16)
            difference = np.abs(view - expected)
            assert difference.max() == 0 if exact else difference.mean() < 1  # the same view, up to rounding


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused(settings: Settings, tmp_path: Path) -> None:
    """Each scan is a pass over the whole image (2,000 of them at 64 Mpx: 76 s); scans in other segments or after
    the image's end (a motion photo's video) are not counted."""
    import io
    import re

    buffer = io.BytesIO()
    noisy_image(5, 64).save(buffer, "JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    end = data.rfind(b"\xff\xd9")
    last_scan = data[[m.start() for m in re.finditer(b"\xff\xda", data)][-1] : end]
    (tmp_path / "bomb.jpg").write_bytes(data[:end] + last_scan * 2000 + data[end:])
    (tmp_path / "moving.jpg").write_bytes(data + b"\xff\xda\x00\x08" * 500)  # appended bytes that look like scans
    comment = b"\xff\xfe" + (2 + 1000).to_bytes(2, "big") + b"\xff\xda" * 500  # a comment segment full of them
    (tmp_path / "comment.jpg").write_bytes(data[:2] + comment + data[2:])
    summary = submit(settings, [str(tmp_path)], wait=True).summary
    rows = {Path(uri).name: row for uri, row in items_by_uri(settings, summary["job_id"]).items()}
    assert rows["bomb.jpg"].error_code == "too_many_scans" and "more than 100 scans" in rows["bomb.jpg"].error_message
    assert rows["moving.jpg"].status == rows["comment.jpg"].status == "done"


def test_a_tiff_of_a_strip_per_row_is_refused_before_pillow_reads_its_strips(
    settings: Settings, tmp_path: Path
) -> None:
    """Pillow reads every strip's offset and size into Python objects when it opens a TIFF: 6.2 million one-row
    strips took 33 s and 2.8 GB. A TIFF of ordinary strips (or one of 1,000 one-row strips) is scanned."""
    import io

    from PIL import Image

    for name, height, bigtiff in (
        ("rows.tif", 100_000, False),
        ("rows-big.tif", 100_000, True),
        ("ok.tif", 1000, False),
    ):
        buffer = io.BytesIO()
        Image.new("RGB", (1, height), (90, 60, 30)).save(buffer, "TIFF", tiffinfo={278: 1}, big_tiff=bigtiff)
        (tmp_path / name).write_bytes(buffer.getvalue())
    summary = submit(settings, [str(tmp_path)], wait=True).summary
    rows = {Path(uri).name: row for uri, row in items_by_uri(settings, summary["job_id"]).items()}
    for name in ("rows.tif", "rows-big.tif"):
        assert rows[name].error_code == "too_many_strips" and "100000 strips" in rows[name].error_message
    assert rows["ok.tif"].status == "done"


def test_a_large_jpeg2000_is_decoded_at_a_reduced_resolution(settings: Settings, tmp_path: Path) -> None:
    """JPEG 2000 has no draft mode; decoding a 64 Mpx file whole took about 10 s. Skipping wavelet levels decodes
    only what the views need, never more levels than the file has, and the image is still scanned."""
    import io

    from scanner.detector.preprocess import decode_image

    picture = noisy_image(3, 256).resize((4096, 2048))
    for levels, expected in ((5, (512, 256)), (1, (2048, 1024))):  # the file's levels cap what can be skipped
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG2000", num_resolutions=levels + 1)
        decoded = decode_image(buffer.getvalue(), 256)
        assert (decoded.image.size, decoded.width, decoded.height) == (expected, 4096, 2048)
    (tmp_path / "wide.jp2").write_bytes(buffer.getvalue())
    summary = submit(settings, [str(tmp_path)], wait=True).summary
    assert [row.status for row in items_by_uri(settings, summary["job_id"]).values()] == ["done"]


def test_fuzzed_files_each_get_one_row(settings: Settings, tmp_path: Path) -> None:
    if "postgresql" in settings.database_url:
        pytest.skip("the fuzz run exercises the decoder; once on SQLite is enough")
    files = corruptions(seed=7, count=300)
    for index, data in enumerate(files):
        (tmp_path / f"fuzz_{index:03d}.jpg").write_bytes(data)
    summary = submit(settings.with_overrides(batch_size=32), [str(tmp_path)], wait=True).summary
    assert summary["finished"] and summary["items"] == 300 and summary["queued"] == 0
    assert summary["done"] + summary["errors"] == 300
    assert set(summary["errors_by_code"]) <= set(ERROR_CODES) - {"internal_error"}


def test_permission_denied_is_an_error_row(tmp_path: Path) -> None:
    import subprocess
    import sys

    secret = tmp_path / "secret.png"
    secret.write_bytes(encode(noisy_image(9, 32)))
    secret.chmod(0)
    snippet = (
        "import sys; from pathlib import Path; from scanner.pipeline.loader import read_file\n"
        "from scanner.pipeline.errors import ItemError\n"
        "try:\n    read_file(Path(sys.argv[1]), 10**6)\nexcept ItemError as exc:\n    print(exc.code)"
    )
    command = [sys.executable, "-c", snippet, str(secret)]
    if os.geteuid() == 0:  # root reads everything: drop the capabilities that bypass file permissions
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(command, capture_output=True, text=True, cwd=repo, timeout=120)
    assert result.stdout.strip() == "permission_denied", result.stderr[-2000:]


def test_directory_with_thousands_of_files(settings: Settings, tmp_path: Path) -> None:
    if "postgresql" in settings.database_url:
        pytest.skip("the walk is the same on both databases; once on SQLite is enough")
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(2500):
        (folder / f"note_{index:04d}.txt").write_text("x")
    for index in range(120):
        (folder / f"img_{index:04d}.png").write_bytes(encode(noisy_image(index, 16)))
    summary = submit(settings.with_overrides(batch_size=64), [str(folder)], wait=True).summary
    assert (summary["items"], summary["done"], summary["skipped"]) == (120, 120, 2500)
    with open_database(settings)() as session:
        assert session.scalar(select(func.count()).select_from(Skipped)) == 2500


def ico_around(png: bytes) -> bytes:
    """An ICO file whose one 256 px entry holds `png` (the header cannot say how large the PNG really is)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def test_an_icon_holding_a_huge_png_is_refused_before_decoding() -> None:
    """An ICO's header says 256 px; the PNG inside can be 13000 px square, which Pillow decoded whole (2.4 GB for
    six such files of 684 KB) before any pixel check."""
    from scanner.detector.preprocess import ImageRejected, decode_image

    with pytest.raises(ImageRejected) as refused:
        decode_image(ico_around(png_bomb(13_000, 13_000)), 256, max_pixels=64_000_000)
    assert refused.value.code == "too_many_pixels" and "13000x13000" in refused.value.message
    small = io.BytesIO()
    noisy_image(5, 48).save(small, format="ICO", sizes=[(48, 48)])
    assert decode_image(small.getvalue(), 256).format == "ICO"  # an ordinary icon still decodes


@pytest.mark.parametrize("fmt", ["TGA", "PCX", "SGI", "XBM", "DDS"])
def test_formats_the_readme_does_not_list_are_not_decoded(fmt: str, settings: Settings, tmp_path: Path) -> None:
    from scanner.detector.preprocess import ImageRejected, decode_image

    image = noisy_image(6, 40).convert("1" if fmt == "XBM" else "RGB")
    data = encode(image, fmt)
    with pytest.raises(ImageRejected) as refused:
        decode_image(data, 256)
    assert refused.value.code == "unsupported_format" and fmt in refused.value.message
    (tmp_path / f"x.{fmt.lower()}").write_bytes(data)
    summary = submit(settings, [str(tmp_path / f"x.{fmt.lower()}")], wait=True).summary
    assert summary["errors_by_code"] == {"unsupported_format": 1}


def test_a_fifo_swapped_in_after_the_walk_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO put where a file was, between the check and the open, blocked `read_file` for ever (no writer)."""
    import threading

    from scanner.pipeline.loader import read_file

    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    regular = (tmp_path / "real.png").stat() if (tmp_path / "real.png").write_bytes(b"x") else None
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, **kw: regular if self == fifo else real_stat(self, **kw))
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(_error_code(read_file, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
    assert outcome == ["not_a_file"]


def _error_code(read: object, path: Path) -> str:
    try:
        read(path, 1000)  # type: ignore[operator]
    except ItemError as exc:
        return exc.code
    return "read"


def test_urls_with_spaces_or_other_scripts_in_their_path_are_fetched_once() -> None:
    """`/café.png` was an internal_error (UnicodeEncodeError) and `/a b.png` three connection_error tries: the path
    is now percent-encoded as browsers do, and an escape already there is kept."""
    from tests.httpserver import NAMED_FILES, HostileHandler

    with HostileServer() as server:
        for name in NAMED_FILES:
            result = fetch_url(server.url(name), FetchPolicy(allow_private=True, retries=2))
            assert result.status == 200 and result.data[:4] == b"\x89PNG", name
        assert fetch_url(server.url("caf%C3%A9.png"), FetchPolicy(allow_private=True)).status == 200
        escaped = {"/caf%C3%A9.png": 2, "/a%20b.png": 1, "/%E7%85%A7%E7%89%87/%E8%84%B8.png": 1}
        assert dict(HostileHandler.hits) == escaped  # one request each (no retry); an escape is never re-escaped
    with pytest.raises(ItemError) as bad_host:
        fetch_url("http://" + "\u00e9" * 70 + ".example/x.png", FetchPolicy(allow_private=True))
    assert bad_host.value.code == "invalid_url" and "host" in bad_host.value.message
