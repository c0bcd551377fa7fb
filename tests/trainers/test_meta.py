import subprocess
import sys

import torch
from torch import nn

from hpsearch.trainers.meta import meta_device


def test_a_model_built_on_the_meta_device_has_a_real_builds_shapes_and_no_values():
    with meta_device():
        meta = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 4), nn.LayerNorm(4))
        nn.init.trunc_normal_(meta[1].weight)
    real = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 4), nn.LayerNorm(4))
    assert all(p.is_meta for p in meta.parameters())
    assert [p.shape for p in meta.parameters()] == [p.shape for p in real.parameters()]


def test_a_real_tensor_still_draws_inside_the_block():
    values = torch.zeros(100)
    with meta_device():
        values.normal_()
    assert not values.is_meta and values.std() > 0.5


def test_building_on_the_meta_device_does_not_import_dynamo():
    # normal_ on a meta tensor imports torch._dynamo (about a second) under a plain torch.device("meta").
    code = ("import sys, torch; from torch import nn; from hpsearch.trainers.meta import meta_device\n"
            "with meta_device(): nn.Embedding(10, 8)\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
