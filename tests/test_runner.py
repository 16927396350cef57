"""Small runner pieces: cell ids, progress lines."""

from pytest_medrobust.cells import Cell
from pytest_medrobust.runner import Progress


def test_cell_ids_keep_two_decimals_and_never_collide():
    assert Cell("m", "black_box", 0.3).id == "m-black_box-0.30"
    assert Cell("m", "black_box", 0.0).id == "m-black_box-0.00"
    assert Cell("m", "p", 0.12).id != Cell("m", "p", 0.125).id


def test_progress_is_rate_limited_and_names_the_running_cell(monkeypatch):
    lines = []
    clock = iter([0.0, 1.0, 4.5, 6.0, 9.0, 9.6, 20.0])
    monkeypatch.setattr("pytest_medrobust.runner.time.perf_counter", lambda: next(clock))
    progress = Progress("demo-plain clean", 1000, lines.append)  # started at t=0
    progress.update(100)  # t=1: too early for the first line (4 s)
    progress.update(500)  # t=4.5: first line
    progress.update(600)  # t=6: within 5 s of the last line
    progress.update(900)  # t=9: still within 5 s
    monkeypatch.setattr(Progress, "current", "demo-plain: black_box over 20% of each image")
    progress.update(950)  # t=9.6: next line, named by the running cell
    progress.update(1000)  # t=20: the next
    assert len(lines) == 3
    assert "demo-plain clean: 500/1000 images" in lines[0] and lines[0].endswith("img/s\n")
    assert "] demo-plain: black_box over 20% of each image: 950/1000 images" in lines[1]
    assert "policy=" not in "".join(lines)


def test_search_seed_follows_the_run_seed_and_the_cell_not_the_model():
    from pytest_medrobust.search import search_seed

    a, b = Cell("plain", "black_box", 0.3, kind="search"), Cell("occaug", "black_box", 0.3, kind="search")
    assert search_seed(0, a) == search_seed(0, b)  # both models are searched over the same placements
    assert search_seed(0, a) != search_seed(1, a)
    assert search_seed(0, a) != search_seed(0, Cell("plain", "black_box", 0.1, kind="search"))
    assert search_seed(0, a) != search_seed(0, Cell("plain", "white_box", 0.3, kind="search"))
    assert search_seed(0, a) == search_seed(0, Cell("plain", "black_box", 0.1 + 0.2, kind="search"))
