"""``python -m bench`` without running a benchmark: discovery, the index, summary.md (no root)."""
from __future__ import annotations

from pathlib import Path

import pytest

import bench.__main__ as runner


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    monkeypatch.setattr(runner, "INDEX", tmp_path / "index.json")
    monkeypatch.setattr(runner, "SUMMARY", tmp_path / "summary.md")
    return tmp_path


def test_discovery_finds_modules_with_main_and_their_quick_args() -> None:
    found = {b.name: b for b in runner.discover()}
    assert "upf_gtpu" in found and found["upf_gtpu"].quick_args == ("--seconds", "1", "--ues", "1", "100")
    assert "rulegen" not in found and "_harness" not in found  # no main(), private
    assert all(b.title for b in found.values())


def test_summary_gathers_reports_ratios_plots_and_failures(results: Path) -> None:
    (results / "alpha.md").write_text(
        "# alpha\n\n**Question.** Is A faster than B?\n\n**Method.** Method: both, same run.\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n- XDP modes: {'mep-mir0x': 'native'}\n"
        "- A takes 2.5x fewer CPU-seconds than B\n\n![alpha](alpha.png)\n")
    (results / "alpha.csv").write_text("a,b\n1,2\n")
    (results / "stray.md").write_text("# stray\n\n**Question.** Written by hand?\n")
    alpha, beta = runner.Benchmark("alpha", "Alpha.", ("--quick",)), runner.Benchmark("beta", "Beta.", None)
    runs = [runner.Run(alpha, ["--quick"], 0, 12.0, ["alpha.csv", "alpha.md"]),
            runner.Run(beta, [], 3, 1.0, [], ["Traceback ...", "RuntimeError: no root"])]
    index = runner.update_index(runs, quick=True)
    assert index["alpha"]["files"] == ["alpha.csv", "alpha.md"] and index["beta"]["exit"] == 3
    text = runner.write_summary([alpha, beta], runs, index, quick=True).read_text()
    assert "| [alpha](#alpha) | Alpha. | ok, 12 s, quick | A takes 2.5x fewer CPU-seconds than B |" in text
    assert "**Method.** both, same run." in text and "![alpha](alpha.png)" in text
    assert "Raw rows: [alpha.csv](alpha.csv)." in text
    assert "FAILED (exit 3)" in text and "RuntimeError: no root" in text
    assert "[stray](stray.md): Written by hand?" in text  # a report no benchmark claimed is still listed
    assert "## Machine" in text and "CPUs" in text


def test_result_files_go_to_the_benchmark_they_are_named_after() -> None:
    names = ["mp1_api", "swap_loss", "dns_userspace", "xdp_rules", "xdp_rules_big"]
    assert runner._owner("dns_userspace", names) == "dns_userspace"
    assert runner._owner("mm5_apply_raw", names) is None  # not named after one: whoever ran then wrote it
    assert runner._owner("xdp_rules_big", names) == "xdp_rules_big"
    assert runner._owner("swap_loss", names) == "swap_loss"
