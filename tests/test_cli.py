import json

import pytest

from mccscan.cli import main


def test_info_lists_the_architectures(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "8,301" in out and "12,381" in out and "GFLOP/s" in out


def test_phantom_command_writes_image_and_truth(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--seed", "4", "--size", "small", "--clusters", "2"]) == 0
    truth = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert len(truth["clusters"]) == 2 and len(list(tmp_path.glob("*.dcm"))) == 1


def test_scan_continues_past_bad_files_and_exits_nonzero(tmp_path, small_phantom, capsys):
    good = small_phantom.write(tmp_path / "in", formats=("png",))["png"]
    bad = tmp_path / "in" / "notes.png"
    bad.write_text("not an image")
    code = main(["scan", str(bad), str(good), "--out", str(tmp_path / "out"), "--pixel-spacing", "0.07"])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.png" in captured.err and "not a recognised image format" in captured.err
    result = json.loads((tmp_path / "out" / f"{good.stem}.json").read_text())
    assert sum(result["counts"].values()) == len(result["tiles"])


def test_missing_weights_is_a_one_line_error(tmp_path, small_phantom, capsys):
    good = small_phantom.write(tmp_path, formats=("png",))["png"]
    assert main(["scan", str(good), "--weights", str(tmp_path / "none.pt")]) == 2
    assert "weights file not found" in capsys.readouterr().err


def test_help_everywhere(capsys):
    for command in ([], ["scan"], ["demo"], ["train"], ["phantom"], ["info"]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0
