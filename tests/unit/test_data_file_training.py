"""``streamrec train`` and ``streamrec evaluate`` read the same files as ``produce``: each
preset's fixture, through the command line's own options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.app.cli import data_format, parser
from streamrec.app.train_cli import evaluate_main, train_main
from streamrec.kernel.errors import StreamrecError
from tests.unit.test_adapters import FIXTURES, LAYOUTS
from tests.unit.test_sasrec import TINY

TINY_SETS = [f"{k}={v}" for k, v in TINY.to_dict().items() if k not in ("seed", "max_epochs")]


@pytest.mark.parametrize("preset", sorted(FIXTURES))
def test_train_and_evaluate_read_each_preset(preset: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = str(LAYOUTS / FIXTURES[preset][0])
    args = parser().parse_args(["train", "--data", data, "--preset", preset, "--out",
                                str(tmp_path / "run")])
    fmt = data_format(args)
    code = train_main(data, fmt, time_budget=30, out=str(tmp_path / "run"),
                      overrides={**TINY.to_dict(), "max_epochs": 2}, eval_reserve=10,
                      progress=False)
    assert code == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["users"] >= 20  # the fixture's 28 users, less those too short to split
    assert report["format"].startswith(("csv", "jsonl"))
    assert "bad row(s) not published" in capsys.readouterr().err, "bad rows reported"
    args = parser().parse_args(["evaluate", "--data", data, "--preset", preset, "--model",
                                "markov", "--json-out", str(tmp_path / "m.json")])
    assert evaluate_main(data, data_format(args), "markov", None, str(tmp_path / "m.json")) == 0
    markov = json.loads((tmp_path / "m.json").read_text())
    assert markov["test"]["full"]["hr@10"] > 0, "the fixture's funnels are learnable"


def test_a_built_in_format_refuses_file_options() -> None:
    args = parser().parse_args(["evaluate", "--data", "x", "--format", "seq", "--types",
                                "a=view", "--model", "markov", "--json-out", "o"])
    with pytest.raises(StreamrecError, match="--format seq has a fixed layout"):
        data_format(args)
    args = parser().parse_args(["evaluate", "--data", "x", "--model", "markov",
                                "--json-out", "o"])
    with pytest.raises(StreamrecError, match="give --format"):
        data_format(args)
