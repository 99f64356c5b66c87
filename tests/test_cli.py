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
    folder = tmp_path / "in" / "more"
    folder.mkdir()
    code = main(["scan", str(bad), str(folder), str(good), "--out", str(tmp_path / "out"), "--pixel-spacing", "0.07"])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.png" in captured.err and "not a recognised image format" in captured.err
    assert "more: a folder, not an image file (`mccscan batch FOLDER`" in captured.err
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


def test_same_named_inputs_get_distinct_outputs(tmp_path, small_phantom, capsys):
    from PIL import Image

    png = small_phantom.write(tmp_path / "a", stem="case", formats=("png", "dcm"))
    (tmp_path / "b").mkdir()
    Image.fromarray(small_phantom.to_uint8()).save(tmp_path / "b" / "case.png")
    inputs = [png["dcm"], png["png"], tmp_path / "b" / "case.png"]
    assert main(["scan", *map(str, inputs), "--out", str(tmp_path / "o")]) == 0
    written = sorted(p.name for p in (tmp_path / "o").glob("*.json"))
    assert written == ["a_case.dcm.json", "a_case.png.json", "b_case.png.json"]
    out = capsys.readouterr().out
    assert all(f"→ {tmp_path / 'o' / name}" in out for name in written)


def test_help_is_fast_because_torch_is_not_imported(tmp_path):
    import subprocess
    import sys

    code = "import sys; from mccscan.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "try: main(['build-dataset', '--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("False")


def test_serve_prints_the_port_it_really_bound(tmp_path):
    import re
    import subprocess
    import sys
    import time

    import httpx

    server = subprocess.Popen([sys.executable, "-m", "mccscan", "serve", "--port", "0", "--data-dir",
                               str(tmp_path / "data")], stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()  # printed once the socket is bound
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        assert port != 0
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/api/info").json()["model"]["name"] == "mc"
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not answer within 30 s")
    finally:
        server.terminate()
        server.wait(10)


def test_bad_port_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "70000"])
    assert info.value.code == 2 and "not a TCP port" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["scan", "x.png", "--min-breast-fraction", "2"], "not a fraction in [0, 1]"),
    (["scan", "x.png", "--threshold", "1.5"], "not a score in [0, 1]"),
    (["batch", "folder", "--threshold", "-1"], "not a score in [0, 1]"),
    (["scan", "x.png", "--max-pixels", "0"], "0 is below 1"),
    (["scan", "x.png", "--normal-color", "zzz"], "'zzz' is not a colour"),
    (["scan", "x.png", "--mcc-color", "notacolor"], "is not a colour"),
    (["phantom", "--format", "png,jpg"], "unknown format 'jpg' (known: png, dcm)"),
    (["phantom", "--count", "0"], "0 is below 1"),
    (["phantom", "--clusters", "-2"], "-2 is below 0"),
    (["scan", "x.png", "--threshold", "high"], "'high' is not a number"),
    (["evaluate", "--bootstrap", "-1"], "-1 is below 0"),
    (["evaluate", "--phantoms", "0"], "0 is below 1"),
    (["serve", "--workers", "two"], "'two' is not a whole number"),
])
def test_options_out_of_range_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as info:  # x.png and folder do not exist: nothing was read
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_phantom_command_writes_only_the_formats_asked(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--size", "small", "--format", "dcm"]) == 0
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".dcm", ".json"]
