"""graphflow's Stable Diffusion node library: one module per stage family.

Importing this package puts Hugging Face libraries in offline mode before they are imported: graphflow
loads models from local files only and never downloads behind the user's back."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
