"""``streamrec train`` and ``streamrec evaluate`` read the same files as ``produce``: each
preset's fixture, through the command line's own options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recmodels.adapters import Layout
from streamrec.app.cli import data_format, parser
from streamrec.app.train_cli import evaluate_main, train_main
from streamrec.kernel.errors import StreamrecError
from tests.unit.test_adapters import FIXTURES, LAYOUTS
from tests.unit.test_sasrec import TINY


def _format(command: str, preset: str, *rest: str) -> str | Layout:
    data = str(LAYOUTS / FIXTURES[preset][0])
    return data_format(parser().parse_args([command, "--data", data, "--preset", preset,
                                            *rest]))


@pytest.mark.parametrize("preset", sorted(FIXTURES))
def test_evaluate_reads_each_preset(preset: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = str(LAYOUTS / FIXTURES[preset][0])
    out = str(tmp_path / "m.json")
    fmt = _format("evaluate", preset, "--model", "markov", "--json-out", out)
    assert evaluate_main(data, fmt, "markov", None, out) == 0
    markov = json.loads(Path(out).read_text())
    assert markov["test"]["full"]["hr@10"] > 0, "the fixture's funnels are learnable"
    assert "bad row(s) not published" in capsys.readouterr().err, "bad rows reported"


def test_train_reads_a_session_file(tmp_path: Path) -> None:
    """Training reads through the same loader as evaluation (one preset suffices here)."""
    data = str(LAYOUTS / FIXTURES["sessions"][0])
    fmt = _format("train", "sessions", "--out", str(tmp_path / "run"))
    code = train_main(data, fmt, time_budget=30, out=str(tmp_path / "run"),
                      overrides={**TINY.to_dict(), "max_epochs": 2}, eval_reserve=10,
                      progress=False)
    assert code == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["users"] >= 20  # the fixture's 28 users, less those too short to split
    assert report["format"].startswith("jsonl (user=session")


def test_a_built_in_format_refuses_file_options() -> None:
    args = parser().parse_args(["evaluate", "--data", "x", "--format", "seq", "--types",
                                "a=view", "--model", "markov", "--json-out", "o"])
    with pytest.raises(StreamrecError, match="--format seq has a fixed layout"):
        data_format(args)
    args = parser().parse_args(["evaluate", "--data", "x", "--model", "markov",
                                "--json-out", "o"])
    with pytest.raises(StreamrecError, match="give --format"):
        data_format(args)
