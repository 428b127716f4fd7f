"""graphflow.paths.hide_folders: a server's folders never reach a client, in any string of an error."""
from pathlib import Path

from graphflow.paths import hide_folders


def test_folders_are_replaced_by_their_labels_everywhere_in_a_json_value(tmp_path):
    inputs, assets = tmp_path / "data" / "inputs", tmp_path / "data" / "inputs" / "shipped"
    error = {"message": f"no such file in the input folders ({inputs.resolve()}, {assets})",
             "expected": [f"{inputs}/a.png", "b.png"], "received": 3, "node": None}
    hidden = hide_folders(error, {"<inputs>": inputs, "<assets>": assets})
    # the nested folder wins over its parent, so it is not shown as "<inputs>/shipped"
    assert hidden == {"message": "no such file in the input folders (<inputs>, <assets>)",
                      "expected": ["<inputs>/a.png", "b.png"], "received": 3, "node": None}
    assert str(tmp_path) not in str(hidden)


def test_text_without_those_folders_is_unchanged():
    assert hide_folders("steps must be >= 1", {"<models>": Path("/srv/models")}) == "steps must be >= 1"


def test_a_relative_folder_hides_its_absolute_form_but_not_the_plain_word(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    text = f"models must be SD 1.x; looked in {tmp_path.resolve() / 'models'}"
    assert hide_folders(text, {"<models>": Path("models")}) == "models must be SD 1.x; looked in <models>"
