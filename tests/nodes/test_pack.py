"""The node library as a node pack: what it declares to the engine beyond its nodes."""
import nodes
from graphflow.registry import Registry


def test_the_library_declares_the_documented_server_defaults_and_its_pixel_counts():
    registry = Registry()
    registry.add_module(nodes)
    assert registry.literal_limits == {"steps": 200, "batch_size": 16}  # README: --max-literal's defaults
    assert registry.output_example == "SaveImage"
    counted = {name: registry.get(name).pixels for name in registry.names() if registry.get(name).pixels}
    assert counted == {"EmptyLatent": ("width", "height", "batch_size"), "LatentUpscale": ("width", "height"),
                       "ImageScale": ("width", "height"), "comfy.EmptyLatentImage": ("width", "height", "batch_size"),
                       "comfy.LatentUpscale": ("width", "height"), "comfy.ImageScale": ("width", "height")}
