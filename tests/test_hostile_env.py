"""Environment variables a user (or a stale shell) sets are checked: a cache that cannot be written
is skipped with one line, and a torchrun rank outside its world is refused instead of hanging."""

from __future__ import annotations

import json

import pytest

from resnetlab import ResnetlabError
from resnetlab.cli import main
from resnetlab.train import distributed


@pytest.mark.parametrize("cache", ["/dev/null", "dir-as-file"])
def test_bench_with_an_unwritable_cache_still_succeeds_and_says_so(
    tmp_path, monkeypatch, capsys, caplog, cache
):
    if cache == "dir-as-file":
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the cache folder should be")
        cache = str(blocker / "sub")
    monkeypatch.setenv("RESNETLAB_CACHE", cache)
    argv = ["bench", "resnet20", "--image-size", "8", "--batch-size", "1", "--repeats", "1",
            "--paths", "eager-fp32,fast-nocompile", "--json", "--device", "cpu"]  # fmt: skip
    with caplog.at_level("WARNING", logger="resnetlab.infer"):
        code = main(argv)
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)
    notes = [r.getMessage() for r in caplog.records if "not kept" in r.getMessage()]
    assert len(notes) >= 1 and "\n" not in notes[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"WORLD_SIZE": "2", "RANK": "5"}, "RANK 5 is outside a world of 2 processes"),
     ({"WORLD_SIZE": "2"}, "RANK is not set"),
     ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected a whole number >= 1"),
     ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK='-1': expected a whole number >= 0")],
)  # fmt: skip
def test_a_rank_outside_the_world_is_refused(monkeypatch, env, expected):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ResnetlabError, match=expected):
        distributed.setup("cpu")
