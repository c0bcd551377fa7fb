"""code_hash: an edit to a builder or to a helper it calls counts; a comment or another function does not."""

import importlib.util
import sys
import textwrap

from hpsearch.models.code import code_hash

SOURCE = """
from torch import nn

def head(width):
    return nn.Linear(width, 2)  # the last layer

def unrelated():
    return 1

class Body(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.layer = head(width)

def build(data, width):
    return nn.Sequential(Body(width))
"""


def load(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_what_counts_as_an_edit(tmp_path):
    base = code_hash(load(tmp_path, "code_base", SOURCE).build)
    same = {
        "comment": SOURCE.replace("# the last layer", "# the output layer"),
        "blank lines": SOURCE.replace("\ndef build", "\n\n\ndef build"),
        "another function": SOURCE.replace("return 1", "return 2"),
    }
    edited = {
        "the builder": SOURCE.replace("nn.Sequential(Body(width))", "nn.Sequential(Body(width), nn.ReLU())"),
        "a class it builds": SOURCE.replace("self.layer = head(width)", "self.layer = head(width * 2)"),
        "a helper that class calls": SOURCE.replace("nn.Linear(width, 2)", "nn.Linear(width, 3)"),
    }
    for i, (what, source) in enumerate({**same, **edited}.items()):
        digest = code_hash(load(tmp_path, f"code_variant_{i}", source).build)
        assert (digest == base) == (what in same), what


def test_moving_a_blocks_end_is_an_edit_and_re_indenting_is_not(tmp_path):
    inside = "def build(data, width):\n    if width:\n        width += 1\n        width *= 2\n    return width\n"
    after = "def build(data, width):\n    if width:\n        width += 1\n    width *= 2\n    return width\n"
    wider = inside.replace("    ", "  ")
    digests = [code_hash(load(tmp_path, f"code_block_{i}", s).build) for i, s in enumerate((inside, after, wider))]
    assert digests[0] != digests[1] and digests[0] == digests[2]


def test_code_built_at_run_time_has_a_hash_too():
    namespace: dict = {}
    exec("def build(data, width):\n    return width * 2\n", namespace)  # no source file, as some notebooks
    exec("def other(data, width):\n    return width * 3\n", namespace)
    assert code_hash(namespace["build"]) != code_hash(namespace["other"])


def test_library_code_is_left_out_as_it_changes_only_with_an_upgrade():
    import torch.nn.functional as F
    from torchmetrics.classification import BinaryAUROC

    from hpsearch.trainers.tasks import classification_loss

    assert code_hash(F.cross_entropy, BinaryAUROC, classification_loss) == code_hash()
