"""Shared fixtures for the node-library tests."""
import pytest


# --- loaders / checkpoints fixtures (tests/nodes/test_loaders.py, test_checkpoints.py) -------------------------
from graphflow.context import CancelToken, RunContext, Settings  # noqa: E402


@pytest.fixture
def models_dir(tmp_path):
    """An empty models directory with the standard subfolders."""
    root = tmp_path / "models"
    for sub in ("checkpoints", "vae"):
        (root / sub).mkdir(parents=True)
    return root


@pytest.fixture
def loader_ctx(models_dir, tmp_path):
    """A RunContext whose settings point at ``models_dir``; events land in ``ctx.events``."""
    events = []
    settings = Settings(models_dir=models_dir, input_dir=tmp_path / "inputs", output_dir=tmp_path / "outputs")
    ctx = RunContext("test-run", "ckpt", "LoadCheckpoint", settings, events.append, CancelToken())
    ctx.events = events
    return ctx


@pytest.fixture(scope="session")
def tiny_components():
    """The built-in tiny model loaded once from its diffusers folder (treat as read-only)."""
    from nodes.builtin_models import tiny_sd_folder
    from nodes.checkpoints import load_diffusers_folder

    return load_diffusers_folder(tiny_sd_folder())
# --- end loaders / checkpoints fixtures -------------------------------------------------------------------------


# --- SD stage-node fixtures (tests/nodes/test_text.py, test_latent.py, test_sampling.py, test_vae.py, ---------
# --- test_image.py, test_parity.py) ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_parts():
    """build_tiny_components(): the tiny SD model's parts as a dict (read-only: nodes must not change them)."""
    from nodes.builtin_models import build_tiny_components

    return build_tiny_components()


@pytest.fixture(scope="session")
def sd_model(tiny_parts):
    from nodes.values import Model

    return Model(tiny_parts["unet"], scheduler_config=dict(tiny_parts["scheduler"].config), family="sd1",
                 prediction_type="epsilon", name="tiny-sd")


@pytest.fixture(scope="session")
def sd_clip(tiny_parts):
    from nodes.values import Clip

    return Clip(tiny_parts["tokenizer"], tiny_parts["text_encoder"], family="sd1", name="tiny-sd")


@pytest.fixture(scope="session")
def sd_vae(tiny_parts):
    from nodes.values import Vae

    return Vae(tiny_parts["vae"], name="tiny-sd")


@pytest.fixture
def stage_ctx(tmp_path):
    """(RunContext, Recorder) with input/output folders tmp_path/input and tmp_path/output (both created)."""
    from tests.nodes.runctx import make_ctx

    ctx, recorder = make_ctx(tmp_path)
    ctx.settings.input_dir.mkdir(parents=True)
    ctx.settings.output_dir.mkdir(parents=True)
    return ctx, recorder
# --- end SD stage-node fixtures ----------------------------------------------------------------------------------
