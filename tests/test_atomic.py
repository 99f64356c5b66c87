import pytest

from mccscan.atomic import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    target = tmp_path / "last.pt"
    atomic_write_text(target, "old, complete")

    def crash_midway(fh):
        fh.write(b"new, half")
        raise KeyboardInterrupt  # the process killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash_midway)
    assert target.read_text() == "old, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    atomic_write_text(target, "new, complete")
    assert target.read_text() == "new, complete"


def test_a_written_file_has_the_permissions_of_any_new_file(tmp_path):
    """0666 less the umask (others can read results), not a temporary file's 0600."""
    import os

    old = os.umask(0o022)
    try:
        assert os.stat(atomic_write_text(tmp_path / "result.json", "{}")).st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
