"""Test-suite settings: offline, hermetic model cache, and the engine's mutation guard on everywhere."""
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRAPHFLOW_CHECK_MUTATIONS"] = "1"
os.environ.setdefault("GRAPHFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="graphflow-test-cache-"))
