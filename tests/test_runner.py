"""Small runner pieces: cell ids, progress lines."""

from pytest_medrobust.cells import Cell
from pytest_medrobust.runner import Progress


def test_cell_ids_keep_two_decimals_and_never_collide():
    assert Cell("m", "black_box", 0.3).id == "m-black_box-0.30"
    assert Cell("m", "black_box", 0.0).id == "m-black_box-0.00"
    assert Cell("m", "p", 0.12).id != Cell("m", "p", 0.125).id


def test_progress_is_rate_limited(monkeypatch):
    lines = []
    clock = iter([0.0, 1.0, 11.0, 12.0, 30.0, 42.0])
    monkeypatch.setattr("pytest_medrobust.runner.time.perf_counter", lambda: next(clock))
    progress = Progress("demo-plain clean", 1000, lines.append)  # started at t=0
    progress.update(100)  # t=1: too early for the first line (10 s)
    progress.update(500)  # t=11: first line
    progress.update(600)  # t=12: within 30 s of the last line
    progress.update(900)  # t=30: still within 30 s
    progress.update(1000)  # t=42: next line
    assert len(lines) == 2
    assert "demo-plain clean: 500/1000 images" in lines[0] and lines[0].endswith("img/s\n")
    assert "1000/1000" in lines[1]


def test_search_seed_follows_the_run_seed_and_the_cell_not_the_model():
    from pytest_medrobust.search import search_seed

    a, b = Cell("plain", "black_box", 0.3, kind="search"), Cell("occaug", "black_box", 0.3, kind="search")
    assert search_seed(0, a) == search_seed(0, b)  # both models are searched over the same placements
    assert search_seed(0, a) != search_seed(1, a)
    assert search_seed(0, a) != search_seed(0, Cell("plain", "black_box", 0.1, kind="search"))
    assert search_seed(0, a) != search_seed(0, Cell("plain", "white_box", 0.3, kind="search"))
    assert search_seed(0, a) == search_seed(0, Cell("plain", "black_box", 0.1 + 0.2, kind="search"))
