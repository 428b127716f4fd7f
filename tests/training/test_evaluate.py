"""training.evaluate reports progress: a line per measured batch on its progress stream (stderr in main)."""
import io
import re

from training.evaluate import ToyRuns


def test_every_measured_batch_gets_a_progress_line(tmp_path):
    progress = io.StringIO()
    runs = ToyRuns(tmp_path, "toy-shapes", seeds=range(2), progress=progress)
    results = runs.measured("a red circle on a white background", steps=2)
    runs.measured("a red circle on a white background", negative="red", steps=2)
    runs.measured("a red circle on a white background", steps=2)  # remembered: nothing drawn, no line
    lines = progress.getvalue().splitlines()
    assert len(lines) == 2 and runs.batches == 2
    seen = ", ".join(f"{colour} {shape} x{n}" for (colour, shape), n in
                     sorted({r: results.count(r) for r in results}.items(), key=lambda item: -item[1]))
    assert re.fullmatch(rf"batch 1: 'a red circle on a white background', cfg 7, steps 2, seeds 0-1 -> "
                        rf"{re.escape(seen)} \(\d+\.\d s\)", lines[0]), lines[0]
    assert lines[1].startswith("batch 2: 'a red circle on a white background', negative 'red', cfg 7, steps 2, seeds 0-1 -> ")


def test_without_a_stream_nothing_is_printed(tmp_path, capsys):
    ToyRuns(tmp_path, "toy-shapes", seeds=range(1)).measured("a blue square", steps=1)
    assert capsys.readouterr() == ("", "")
