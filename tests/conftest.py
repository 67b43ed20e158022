"""Shared fixtures: a real Prefect test harness and real MLflow sqlite stores in temp folders."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

# Before Prefect is imported: the temporary server's telemetry heartbeat fights over its sqlite.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Tests never use a platform that `glassbox up` left running on the developer's machine, nor
# a tracking store from the shell: the tests that want one start their own.
os.environ["GLASSBOX_HOME"] = tempfile.mkdtemp(prefix="glassbox-home-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
GLASSBOX = str(Path(sys.executable).with_name("glassbox"))  # the CLI as installed


def in_terminal(argv: list[str], env: dict[str, str], until: str, times: int = 1):
    """A `glassbox` command as a terminal runs it (a session of its own, output piped), returned
    with the lines it printed once `until` has appeared in `times` of them."""
    import subprocess

    proc = subprocess.Popen(
        [GLASSBOX, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    for line in proc.stdout:  # type: ignore[union-attr]
        seen.append(line)
        if sum(until in s for s in seen) >= times:
            return proc, seen
    pytest.fail(f"`{until}` never appeared:\n" + "".join(seen[-40:]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """Overrides that send a flow's tracking and workspace into a fresh temp folder."""
    root = tmp_path_factory.mktemp("mlruns")
    return {
        "tracking.uri": f"sqlite:///{root}/mlflow.db",
        "tracking.artifact_root": str(root / "artifacts"),
        "data.workspace": str(root / "workspace"),
    }


@pytest.fixture
def client(store):
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    tracking.configure(
        TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    )
    return MlflowClient()


def penguins_like(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A small data set with a string target, string categoricals and missing values."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], n)
    island = np.where(
        species == "Gentoo", "Biscoe", rng.choice(["Dream", "Torgersen", "Biscoe"], n)
    )
    base = {"Adelie": 38.8, "Chinstrap": 48.8, "Gentoo": 47.5}
    bill = np.array([base[s] for s in species]) + rng.normal(0, 2.5, n)
    depth = np.where(species == "Gentoo", 15.0, 18.4) + rng.normal(0, 1.0, n)
    sex = rng.choice(["male", "female", None], n, p=[0.48, 0.48, 0.04])
    frame = pd.DataFrame(
        {
            "species": species,
            "island": island,
            "bill_length_mm": bill,
            "bill_depth_mm": depth,
            "sex": sex,
            "year": rng.choice([2007, 2008, 2009], n),
        }
    )
    frame.loc[rng.choice(n, 5, replace=False), "bill_length_mm"] = np.nan
    return frame


@pytest.fixture(scope="module")
def cluster():
    """A real local Dask cluster (one worker process, two threads) for one test module; closed
    before the next module, so flows never run beside a second default client."""
    from tasks.cluster import dask_cluster
    from tasks.config import ClusterConfig

    with dask_cluster(ClusterConfig(n_workers=1, threads_per_worker=2)) as handle:
        yield handle


def messy_frame(n: int = 1200, task: str = "binary", seed: int = 0) -> pd.DataFrame:
    """Raw data as users have it: ISO date strings (the season matters), a string categorical
    with gaps, a number column holding "?" and "N/A" tokens, a free-text name that is nearly
    unique per row (it predicts nothing), a sequential record number, and a target that is a
    string label (binary, multiclass) or a number (regression)."""
    rng = np.random.default_rng(seed)
    dates = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 4 * 365, n), unit="D")
    month = dates.month.to_numpy()
    city = rng.choice(["Oslo", "Lima", "Pune", "Kyiv"], n)
    amount = rng.gamma(2.0, 50.0, n).round(2)
    signal = (
        (amount - 100) / 60
        + np.where(city == "Lima", 1.2, np.where(city == "Kyiv", -1.0, 0.0))
        + np.where((month >= 6) & (month <= 8), 1.5, -0.3)
        + rng.normal(0, 0.5, n)
    )
    amount_text = amount.astype(str).astype(object)
    amount_text[rng.choice(n, n // 40, replace=False)] = "?"
    amount_text[rng.choice(n, n // 60, replace=False)] = "N/A"
    city = city.astype(object)
    city[rng.choice(n, n // 25, replace=False)] = None
    frame = pd.DataFrame(
        {
            "record": np.arange(1, n + 1),
            "when": dates.strftime("%Y-%m-%d"),
            "city": city,
            "amount": amount_text,
            "name": [f"customer {i}" for i in rng.integers(0, 50 * n, n)],
            "tenure": rng.integers(0, 30, n).astype(float),
        }
    )
    if task == "regression":
        frame["target"] = (signal * 10 + 50).round(3)
    elif task == "binary":
        frame["target"] = np.where(signal > 0.8, "churned", "stayed")
    else:
        frame["target"] = np.select([signal < 0, signal < 1.5], ["low", "mid"], "high")
    return frame


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """`request.node.rep_call` for fixtures that act on a test's outcome (browser screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "mlruns" / "test-screenshots"


@pytest.fixture
def page(request):
    """A page in Debian's chromium driven by Playwright; a screenshot when the test fails."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        page = context.new_page()
        yield page
        if request.node.rep_call.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for i, open_page in enumerate(context.pages):
                shot = SCREENSHOTS / f"{request.node.name}-{i}.png"
                open_page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot} ({open_page.url})")
        browser.close()
