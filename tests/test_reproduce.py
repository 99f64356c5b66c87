import json

import pytest

from mccscan.cli import main


@pytest.fixture(scope="module")
def quick_report(built_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["reproduce", "--data", str(built_dataset), "--out", str(out), "--quick"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_reproduce_writes_the_report_with_every_table_and_figure(quick_report):
    out, results = quick_report
    report = (out / "report.md").read_text()
    assert report.index("**Protocol: patient**") < report.index("## Training")
    assert "not from patient data" in report  # the phantom says so
    for heading in ("## Patch level", "## Image level: FROC", "## Table 1", "## Table 2", "## Table 3",
                    "## Figures 3–5"):
        assert heading in report
    for png in ("roc", "calibration", "froc", "fig3_feature_maps", "fig4_filter_response", "fig5_mean_f2"):
        assert (out / "figures" / f"{png}.png").stat().st_size > 5000
        assert f"figures/{png}.png" in report
    assert (out / "models" / "proposed" / "training_curves.png").is_file()
    assert "| cl2-k9-6x16 | 2 | 9×9 | 6, 16 | 0 | 8,301 |" in report and "| 99.3% |" in report


def test_quick_reproduce_results_agree_with_the_models(quick_report):
    out, results = quick_report
    assert [r["name"] for r in results["table3"]] == ["proposed", "lenet5", "mobilenetv2", "mobilenetv2-paper-head"]
    paper_head = results["table3"][-1]
    assert paper_head["parameters_keras"] == paper_head["paper_parameters"] == 67_797_505
    assert all(r["s_per_patch"] > 0 and r["s_per_mammogram"] > 0 for r in results["table3"])
    proposed = results["table3"][0]["accuracy"]
    assert proposed == results["patch_level"]["metrics"]["accuracy"]
    lo, hi = proposed["ci95"]
    assert lo <= proposed["value"] <= hi
    froc = results["froc"]
    assert froc["images"] == 2 and froc["clusters"] == 4  # the test patient's two phantoms, two clusters each
    assert results["tuning"] == {"skipped": "--quick: no Hyperband search"}


def test_reproduce_resumes_instead_of_retraining(quick_report, built_dataset, capsys):
    out, results = quick_report
    before = (out / "models" / "proposed" / "best.pt").stat().st_mtime_ns
    from mccscan.reproduce import ReproduceConfig, reproduce

    again = reproduce(built_dataset, out, ReproduceConfig.quick_mode(n_bootstrap=20))
    assert (out / "models" / "proposed" / "best.pt").stat().st_mtime_ns == before
    assert "resuming" in capsys.readouterr().out
    accuracy = results["patch_level"]["metrics"]["accuracy"]["value"]
    assert again["patch_level"]["metrics"]["accuracy"]["value"] == accuracy
