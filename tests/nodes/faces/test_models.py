"""LoadFaceRestoreModel / LoadFaceDetector: random-weight files in the real architectures' layouts are
recognised from their keys, loaded strictly, and every bad file is refused by name."""
import pytest
import torch

from graphflow.context import Settings
from graphflow.errors import NodeInputError
from nodes.faces import requirements, tiny
from nodes.faces.detection import load_detector
from nodes.faces.nodes import LoadFaceDetector, LoadFaceRestoreModel, model_path
from nodes.faces.restorers import load_restorer, restore_crop
from tests.nodes.runctx import make_ctx, run_node


@pytest.fixture(scope="module")
def gfpgan_file(tmp_path_factory):
    """GFPGAN as its releases ship it: a .pth with the weights under params_ema (86 M random parameters)."""
    path = tmp_path_factory.mktemp("gfpgan") / "GFPGANv1.4.pth"
    torch.save({"params_ema": tiny.gfpgan_state()}, path)
    return path


def test_a_tiny_restoreformer_is_recognised_and_restores_a_512_crop(tmp_path):
    path = tiny.save_state(tiny.restoreformer_state(), tmp_path / "rf.safetensors", torch.float16)
    model = load_restorer(path, "rf.safetensors")
    assert model.architecture == "RestoreFormer"
    assert set(model.descriptor.model.state_dict()) == set(tiny.restoreformer_state())
    face = restore_crop(model, torch.rand(3, 512, 512), fidelity=0.5)
    assert face.shape == (3, 512, 512) and 0 <= float(face.min()) and float(face.max()) <= 1


def test_a_gfpgan_release_file_is_recognised_with_every_tensor(gfpgan_file):
    model = load_restorer(gfpgan_file, gfpgan_file.name)
    assert model.architecture == "GFPGAN"
    loaded = model.descriptor.model.state_dict()
    expected = tiny.gfpgan_state()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in ("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"))
    face = restore_crop(model, torch.rand(3, 512, 512), fidelity=0.5)
    assert face.shape == (3, 512, 512)


def test_codeformer_loads_with_spandrel_extra_arches_and_its_fidelity_changes_the_face(tmp_path):
    pytest.importorskip("spandrel_extra_arches")  # the codeformer extra; .ci/run installs it
    path = tiny.save_state(tiny.codeformer_state(), tmp_path / "codeformer.safetensors")
    model = load_restorer(path, "codeformer.safetensors")
    assert model.architecture == "CodeFormer"
    crop = torch.rand(3, 512, 512)
    faithful, restored = restore_crop(model, crop, 1.0), restore_crop(model, crop, 0.0)
    assert (faithful - restored).abs().max() > 1e-3


def test_without_spandrel_extra_arches_a_codeformer_file_names_the_extra(tmp_path, monkeypatch):
    state = {"position_emb": torch.zeros(256, 8), "idx_pred_layer.1.weight": torch.zeros(4, 8),
             "quantize.embedding.weight": torch.zeros(4, 256)}
    path = tiny.save_state(state, tmp_path / "codeformer.safetensors")
    monkeypatch.setattr(requirements, "installed", lambda module: module != "spandrel_extra_arches")
    with pytest.raises(NodeInputError, match=r"CodeFormer model.*spandrel_extra_arches") as caught:
        load_restorer(path, "codeformer.safetensors")
    assert "graphflow[codeformer]" in caught.value.expected


def test_an_upscaler_is_not_a_face_model(tmp_path):
    from spandrel.architectures.ESRGAN import ESRGAN

    path = tiny.save_state(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict(), tmp_path / "x4.safetensors")
    with pytest.raises(NodeInputError, match="not a face restoration model") as caught:
        load_restorer(path, "x4.safetensors")
    assert "GFPGAN" in caught.value.expected and "RestoreFormer" in caught.value.expected


def test_a_corrupt_file_is_refused_by_name(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a pickle")
    with pytest.raises(NodeInputError, match="could not read 'bad.pth'"):
        load_restorer(tmp_path / "bad.pth", "bad.pth")


@pytest.mark.parametrize("network", ["mobile0.25", "resnet50"])
def test_a_retinaface_file_loads_into_the_backbone_its_keys_name(tmp_path, network):
    state = tiny.retinaface_state(network)
    path = tmp_path / "det.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # facexlib's files were saved from DataParallel
    detector = load_detector(path, "det.pth")
    assert detector.network.cfg["name"] == {"mobile0.25": "mobilenet0.25", "resnet50": "Resnet50"}[network]
    loaded = detector.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_detector_file_missing_a_tensor_is_refused_with_what_is_missing(tmp_path):
    state = tiny.retinaface_state()
    del state["ClassHead.0.conv1x1.weight"]
    path = tiny.save_state(state, tmp_path / "det.safetensors")
    with pytest.raises(NodeInputError, match=r"1 missing \(e.g. ClassHead.0.conv1x1.weight\)"):
        load_detector(path, "det.safetensors")


def test_a_file_of_another_network_is_no_detector(tmp_path):
    path = tiny.save_state(tiny.restoreformer_state(), tmp_path / "rf.safetensors")
    with pytest.raises(NodeInputError, match="not a RetinaFace detector"):
        load_detector(path, "rf.safetensors")


def test_without_facexlib_the_detector_names_the_faces_extra(tmp_path, monkeypatch):
    path = tiny.save_state(tiny.retinaface_state(), tmp_path / "det.safetensors")
    monkeypatch.setattr(requirements, "installed", lambda module: module != "facexlib")
    with pytest.raises(NodeInputError, match="needs the facexlib package") as caught:
        load_detector(path, "det.safetensors")
    assert "graphflow[faces]" in caught.value.expected


def test_the_loaders_look_in_their_model_folders_and_list_what_is_there(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    tiny.save_state(tiny.restoreformer_state(), tmp_path / "models" / "facerestore_models" / "rf.safetensors")
    tiny.save_state(tiny.retinaface_state(), tmp_path / "models" / "facedetection" / "det.safetensors")
    assert run_node(LoadFaceRestoreModel, ctx, name="rf.safetensors").architecture == "RestoreFormer"
    assert run_node(LoadFaceDetector, ctx, name="det.safetensors").name == "det.safetensors"
    with pytest.raises(NodeInputError, match="no face detector named 'detection_Resnet50_Final.pth'") as caught:
        run_node(LoadFaceDetector, ctx)  # the default name, not there: never downloaded
    assert "det.safetensors" in caught.value.expected


def test_an_a1111_install_lends_its_gfpgan_and_codeformer_folders(tmp_path):
    models = tmp_path / "webui" / "models"
    gfpgan = tiny.save_state({"x": torch.zeros(1)}, models / "GFPGAN" / "GFPGANv1.4.safetensors")
    codeformer = tiny.save_state({"x": torch.zeros(1)}, models / "Codeformer" / "codeformer-v0.1.0.safetensors")
    settings = Settings(models_dir=models)
    assert model_path("facerestore_models", "GFPGANv1.4.safetensors", settings) == gfpgan
    assert model_path("facerestore_models", "codeformer-v0.1.0.safetensors", settings) == codeformer
