"""Figure 7: start time of the ``codecbench`` command, against a bare ``python -c "import grpc"``.

Interleaved round by round (issue 10, point 3), each timed from spawn to exit:

- **codecbench --help**: the console script, which imports the typer app, the client and the
  views (torch, scipy and matplotlib stay unloaded: they load on first use) and renders the help;
- **import of the CLI**: ``python -c "from codecbench.cli import app; app.registered_commands"``,
  the imports alone, so the help rendering is the difference to the row above;
- **import grpc**: the baseline; any gRPC client pays it;
- **bare interpreter**: ``python -c pass``, the floor under all of them.

The ratio ``codecbench --help / import grpc`` has the issue's goal of 2× at most.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import harness
from bench.harness import BenchContext
from bench.report import Figure, Ratio, paired_ratio

NUMBER = 7
TITLE = "CLI start (codecbench --help vs python -c 'import grpc')"
TIMEOUT_S = 120.0  # full size; --quick halves it
TARGET = "<= 2.0"


async def run(ctx: BenchContext) -> Figure:
    fig = Figure("cli_start", NUMBER, TITLE)
    script = str(Path(harness.PYTHON).with_name("codecbench"))
    commands = {
        "help": [script, "--help"],
        "import": [harness.PYTHON, "-c", "from codecbench.cli import app; app.registered_commands"],
        "grpc": [harness.PYTHON, "-c", "import grpc"],
        "bare": [harness.PYTHON, "-c", "pass"],
    }

    def arm(argv: list[str]) -> Callable[[], Awaitable[float]]:
        return lambda: harness.time_command(ctx, argv, timeout_s=60.0)

    for argv in commands.values():  # warm-up, not counted: page cache, .pyc files
        await harness.time_command(ctx, argv, timeout_s=60.0)
    samples = await harness.alternate(ctx.sizes.cli_start_n, [(k, arm(v)) for k, v in commands.items()],
                                      budget_s=ctx.figure_timeout_s * 0.8)
    ms = {k: [s * 1000 for s in v] for k, v in samples.items()}
    help_dist = fig.add("codecbench --help (console script), spawn to exit", "ms", ms["help"])
    fig.add('python -c "from codecbench.cli import app" (imports only)', "ms", ms["import"])
    grpc_dist = fig.add('python -c "import grpc" (baseline)', "ms", ms["grpc"])
    fig.add('python -c "pass" (bare interpreter)', "ms", ms["bare"])
    value, spread = paired_ratio(samples["help"], samples["grpc"])
    fig.ratios.append(Ratio("codecbench --help / import grpc", value, spread, target=TARGET,
                            how="median of per-round ratios"))
    value, spread = paired_ratio(samples["import"], samples["grpc"])
    fig.ratios.append(Ratio("import of the CLI / import grpc", value, spread, how="median of per-round ratios"))
    fig.values["codecbench --help, median"] = (help_dist.percentile(50), "ms")
    fig.values["import grpc, median"] = (grpc_dist.percentile(50), "ms")
    fig.headline.append("codecbench --help, median")
    fig.notes += [
        "Before issue 10 every command imported torch (2.2 s) and bjontegaard/scipy/pyplot (1.5 s) at start; "
        "they now load on first use (tensor values, BD-rate, plots), which tests/test_imports.py pins.",
        "What remains above `import grpc` is typer and rich (and, for --help only, typer's rich help "
        "formatter, which imports rich.markdown with markdown_it and pygments), protobuf's generated "
        "modules, and codecbench's client, errors and views.",
    ]
    return fig
