"""Shared fixtures: a tiny trained model, generated images, and fresh SQLite/PostgreSQL databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scanner.db import upgrade
from scanner.settings import Settings
from tests.imaging import write_dataset, write_face_dataset
from training.train import TrainConfig
from training.train import main as train_main

PG_ADMIN = os.environ.get("FAUXSCAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FAUXSCAN_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real/ + fake/ folder: smooth images are real, noisy ones fake."""
    return write_dataset(tmp_path_factory.mktemp("toy"), per_class=24, size=32)


def tiny_config(data: Path, out: Path, epochs: int = 6) -> TrainConfig:
    """A training configuration small enough for tests (32 px, narrow network, no augmentation)."""
    return TrainConfig(
        data_dirs=[str(data)], out=str(out), arch="paper-cnn", epochs=epochs, batch_size=16, lr=3e-3,
        size=32, augment="none", workers=0, device="cpu", threshold_rule="youden",
        arch_args={"input_size": 32, "width": 8},
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_model(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained on the toy task in a few seconds."""
    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    train_main(tiny_config(toy_data, out))
    return out


@pytest.fixture(scope="session")
def face_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real/ + fake/ folder of drawn faces (clean real, noisy fake) that the face finder detects."""
    return write_face_dataset(tmp_path_factory.mktemp("faces"), per_class=12)


@pytest.fixture(scope="session")
def face_model(face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny face-aware checkpoint (whole image + face crops at 32 px), trained for two epochs."""
    out = tmp_path_factory.mktemp("face-model") / "faces.pt"
    config = TrainConfig(
        data_dirs=[str(face_data)], out=str(out), arch="fauxnet", epochs=2, batch_size=8, lr=3e-3, size=32,
        max_side=160, augment="none", workers=0, device="cpu", threshold_rule="source-fpr:0.05", views="faces",
        balance=True, arch_args={"widths": [4, 8], "dropout": 0.0},
    )  # fmt: skip
    train_main(config)
    return out


def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database's URL, dropped afterwards."""
    name = f"fauxscan_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    yield from fresh_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on an embedded SQLite file (migrated on first use) and on PostgreSQL (migrated here)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scan.db'}"
        return
    for url in fresh_pg_database():
        upgrade(url)
        yield url


@pytest.fixture
def settings(db_url: str, tiny_model: Path) -> Settings:
    """Embedded-mode settings on the parametrised database with the tiny model."""
    return make_settings(db_url, tiny_model)


def make_settings(db_url: str, model: Path, **overrides: object) -> Settings:
    """Settings for tests: CPU, small batches, loopback URLs allowed, quick retries."""
    base = Settings(
        database_url=db_url, broker_url=None, model_path=model, device="cpu", batch_size=8,
        allow_private_urls=True, http_timeout=2.0, http_retries=1, http_backoff=0.05, torch_threads=1,
    )  # fmt: skip
    return base.with_overrides(**overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a subprocess or CLI run (every field)."""
    return settings.to_env()
