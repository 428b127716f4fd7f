"""nodes.values: socket values are sized and digested over the engine's one walk (graphflow.cache.walk)."""
import torch

from nodes.values import digest_of, nbytes_of


def test_nbytes_counts_tensors_and_module_weights_wherever_they_sit():
    linear = torch.nn.Linear(3, 2)  # 6 + 2 float32 parameters
    value = {"module": linear, "tensors": [torch.zeros(4, dtype=torch.float16), (torch.zeros(2, dtype=torch.int64),)],
             "name": "not weights"}
    assert nbytes_of(value) == 8 * 4 + 4 * 2 + 2 * 8


def test_digest_changes_with_any_tensor_byte_and_with_structure():
    tensor = torch.arange(6, dtype=torch.float32)
    before = digest_of({"x": [tensor], "label": "a"})
    assert digest_of({"x": [tensor.clone()], "label": "a"}) == before
    changed = tensor.clone()
    changed[5] = 5.5
    assert digest_of({"x": [changed], "label": "a"}) != before
    assert digest_of({"x": [tensor], "label": "b"}) != before
    assert digest_of({"x": tensor, "label": "a"}) != before  # same bytes, other place


def test_digest_of_a_module_follows_its_weights():
    linear = torch.nn.Linear(2, 2)
    before = digest_of(linear)
    with torch.no_grad():
        linear.bias.add_(1)
    assert digest_of(linear) != before


def test_a_module_with_a_0_dim_buffer_has_a_digest_that_follows_it():
    """BatchNorm's num_batches_tracked is a 0-dim tensor (the face detector has 100 of them)."""
    norm = torch.nn.BatchNorm2d(2)
    before = digest_of(norm)
    norm.num_batches_tracked += 1
    assert digest_of(norm) != before
