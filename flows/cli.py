"""The `glassbox` command. While `glassbox up` runs, a flow command (`train`, `retrain`, `sweep`,
`promote`, `rollback`) is handed to the platform's warm runner straight away: this module imports
the standard library and the platform's state reader only, so that costs milliseconds, not the
half second of importing the command-line program (`flows.commands`) first. The runner's child
parses the arguments and says what is wrong with them, on the user's terminal."""

from __future__ import annotations

import os
import sys

from tasks import platform, runner


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Glassbox draws into files only: no GUI backend in this process, nor in the Dask workers
    # and platform processes it starts (they inherit it). On a desktop, pyplot (shap's plots,
    # drawn in worker threads) would otherwise pick macOS's or Tk's, which fail off the main
    # thread.
    os.environ["MPLBACKEND"] = "Agg"
    if args and args[0] in runner.DELEGATED and not {"-h", "--help"} & set(args):
        code = _in_runner(args)
        if code is not None:
            return code
    from flows.commands import main as run

    return run(args)


def _in_runner(argv: list[str]) -> int | None:
    """While `glassbox up` runs, a flow command runs in its warm runner (`tasks.runner`):
    everything is imported there already. None: run it here (no runner, or already in it,
    or `GLASSBOX_NO_RUNNER` set)."""
    if os.environ.get(runner.IN_RUNNER_ENV) or os.environ.get(runner.OFF_ENV):
        return None
    state = platform.running()
    if state is None or "runner" not in state.processes:
        return None
    # A user's own Prefect API wins: the runner talks to the platform's.
    api = os.environ.get("PREFECT_API_URL")
    if api and api != state.prefect_api:
        return None
    return runner.delegate(platform.runner_socket(platform.home_dir()), argv)


if __name__ == "__main__":
    sys.exit(main())
