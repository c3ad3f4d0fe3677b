"""A full disk or an unwritable workdir: one line naming the path and exit 2 (issue 25, 6).

On 302bc43 the recipes let the raw ``OSError`` through (a traceback; for ENOSPC from
``fsync`` without any path), and a read-only workdir likewise.
"""

import errno
import os
import sys

import pytest

from kdzoo import atomic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "recipes"))
import common  # noqa: E402  (the recipes' shared layer)


def _disk_full(*_):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_an_atomic_write_names_the_file_and_exits_2(tmp_path, monkeypatch,
                                                                       capsys):
    target = tmp_path / "metrics.json"
    monkeypatch.setattr(os, "fsync", _disk_full)
    main = common.guarded(lambda argv: atomic.write_json(str(target), {"a": 1}))
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"no space left on device at {target}" in err
    assert "--workdir" in err and "Traceback" not in err
    assert not target.exists() and os.listdir(tmp_path) == []  # no half-written file


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied writing")])
def test_an_unwritable_workdir_is_named(code, words, capsys):
    def main(argv):
        raise OSError(code, os.strerror(code), "/data/runs/pets/config.json")
    with pytest.raises(SystemExit) as exit_info:
        common.guarded(main)([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "/data/runs/pets/config.json" in err and "--workdir" in err


def test_other_os_errors_keep_their_traceback():
    def main(argv):
        raise OSError(errno.EIO, "Input/output error", "/x")
    with pytest.raises(OSError, match="Input/output"):
        common.guarded(main)([])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_a_real_read_only_directory(tmp_path, capsys):
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(SystemExit):
            common.guarded(lambda argv: atomic.write_json(str(tmp_path / "c.json"), {}))([])
    finally:
        os.chmod(tmp_path, 0o700)
    assert "permission denied writing" in capsys.readouterr().err
