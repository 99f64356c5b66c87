import json

import pytest

from mccscan.models import MCCNet
from mccscan.tune import PAPER_BEST, SEARCH_SPACE, TuneConfig, architecture_table, net_config, tune


def test_search_space_is_the_papers_table2_and_contains_its_best():
    assert SEARCH_SPACE["cl1_filters"] == (4, 6, 8, 10, 12) and SEARCH_SPACE["cl2_size_px"] == (3, 5, 7, 9, 11)
    assert SEARCH_SPACE["batch_size"] == (16, 32, 64, 128) and SEARCH_SPACE["learning_rate"] == (0.01, 0.001, 0.0001)
    assert all(PAPER_BEST[k] in SEARCH_SPACE[k] for k in SEARCH_SPACE)
    assert MCCNet(net_config(PAPER_BEST)).num_parameters() == 8301


def test_workers_share_one_study_and_write_the_best_config_and_table(tmp_path, built_dataset):
    import optuna

    config = TuneConfig(trials=2, max_epochs=2, max_train_patches=48, seed=1)
    tune(built_dataset, tmp_path, config)
    # a second worker on the same storage adds its trials to the same study
    summary = tune(built_dataset, tmp_path, TuneConfig(**{**config.__dict__, "seed": 2}))
    study = optuna.load_study(study_name=config.study_name, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 4
    best = json.loads((tmp_path / "best.json").read_text())
    assert all(best[k] in SEARCH_SPACE[k] for k in SEARCH_SPACE)
    assert best["validation_accuracy"] == max(t.value for t in study.trials if t.value is not None)
    assert best["parameters"] == MCCNet(net_config(best)).num_parameters()
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("| architecture | CL | filter size |") and f"trial {best['trial']}" in table
    assert summary["best"] == best


def test_two_workers_share_one_study_in_a_real_postgresql(tmp_path, built_dataset, postgres_server):
    """Two `mccscan tune` processes at once against one PostgreSQL study (psycopg 3)."""
    import subprocess
    import sys

    import optuna
    from components import new_database

    url = new_database(postgres_server)
    workers = [subprocess.Popen([sys.executable, "-m", "mccscan", "tune", "--data", str(built_dataset),
                                 "--out", str(tmp_path / f"w{k}"), "--storage", url, "--trials", "2",
                                 "--max-epochs", "1", "--max-train-patches", "32", "--seed", str(k)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in (1, 2)]
    for worker in workers:
        assert worker.wait(600) == 0, worker.stderr.read().decode()[-2000:]
    study = optuna.load_study(study_name=TuneConfig.study_name, storage=url.replace("postgresql://",
                                                                                    "postgresql+psycopg://"))
    assert len(study.trials) == 4 and len({t.number for t in study.trials}) == 4
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # Hyperband may prune
    assert all(t.state in finished for t in study.trials), [t.state for t in study.trials]
    assert json.loads((tmp_path / "w2" / "best.json").read_text())["trial"] in {t.number for t in study.trials}


def test_an_unknown_database_url_is_a_clear_error(tmp_path, built_dataset):
    with pytest.raises(ValueError, match="use sqlite"):
        tune(built_dataset, tmp_path, TuneConfig(storage="mysql://u:secret@db.example/optuna", trials=1))


def test_architecture_table_marks_mixed_kernels_and_untrained_rows():
    rows = [{"name": "a", "config": net_config(PAPER_BEST), "parameters": 8301, "accuracy": 0.993,
             "paper_parameters": 8301, "paper_accuracy": 0.993},
            {"name": "b", "config": net_config({**PAPER_BEST, "cl1_size_px": 5}), "parameters": 7965, "accuracy": None}]
    table = architecture_table(rows).splitlines()
    assert table[2] == "| a | 2 | 9×9 | 6, 16 | 0 | 8,301 | 99.3% | 8,301 | 99.3% |"
    assert "| 5×5, 9×9 |" in table[3] and "not trained" in table[3]
