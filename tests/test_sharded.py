"""One model from many files: sharded checkpoints written the way Hugging Face writes them
(safetensors and ``torch.save`` shards with their index), shards without an index, a folder
with one model and a ``config.json``, ONNX external data in one file per tensor, a TensorFlow
checkpoint in several shards. Each read as one model: every tensor equal to the framework's,
the same layers and totals as the model read from one file, a layer split across two shards
one layer; a missing or inconsistent shard one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope
from tests import reference

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

nn = torch.nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)


class Tiny(nn.Module):
    """Named as HF models are (``model.layers.0.q_proj``), with a conv and a batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.layers = nn.ModuleList([Block() for _ in range(3)])
        self.head = nn.Linear(6, 5)


def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():  # statistics that are not the initial ones
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return {name: value.contiguous() for name, value in model.state_dict().items()}


def shard_plan(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """The names in each shard, as ``huggingface_hub.split_torch_state_dict_into_shards``
    fills them: in state-dict order, a new shard once the next tensor would not fit."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_sharded(
    folder: Path, tensors: dict[str, torch.Tensor], kind: str, max_bytes: int = 300
) -> list[Path]:
    """Shards and index as ``transformers``' ``save_pretrained`` writes them; ``kind`` is
    ``safetensors`` or ``bin``."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = shard_plan(tensors, max_bytes)
    stem, suffix = ("model", ".safetensors") if kind == "safetensors" else ("pytorch_model", ".bin")
    paths, weight_map = [], {}
    for number, names in enumerate(plan, 1):
        path = folder / f"{stem}-{number:05d}-of-{len(plan):05d}{suffix}"
        part = {name: tensors[name] for name in names}
        if kind == "safetensors":
            safetensors_torch.save_file(part, path, metadata={"format": "pt"})
        else:
            torch.save(part, path)
        weight_map.update(dict.fromkeys(names, path.name))
        paths.append(path)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / f"{stem}{suffix}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


CONFIG = {
    "architectures": ["TinyForCausalLM"],
    "model_type": "tiny",
    "torch_dtype": "float32",
    "hidden_size": 6,
    "num_hidden_layers": 3,
    "vocab_size": 11,
}


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return state_dict()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tensors) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    for kind in ("safetensors", "bin"):
        write_sharded(root / kind, tensors, kind)
        (root / kind / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (root / "single").mkdir()
    safetensors_torch.save_file(tensors, root / "single/model.safetensors")
    (root / "single/config.json").write_text(json.dumps(CONFIG))
    return {"root": root, **{p.name: p for p in root.iterdir()}}


def layers_of(model: weightscope.Model) -> list[tuple]:
    """Each layer's name, kind and tensors, in name order (a single safetensors file keeps
    none: it is read in name order, shards in the order they hold the state dict)."""
    return sorted(
        (layer.name, str(layer.kind), sorted((t.name, t.role, t.counted) for t in layer.tensors))
        for layer in model.layers
    )


def split_modules(folder: Path) -> set[str]:
    """Modules whose tensors lie in more than one shard of ``folder``'s index."""
    (index,) = folder.glob("*.index.json")
    shards: dict[str, set[str]] = {}
    for name, shard in json.loads(index.read_text())["weight_map"].items():
        shards.setdefault(name.rsplit(".", 1)[0], set()).add(shard)
    return {module for module, files in shards.items() if len(files) > 1}


# ---------------------------------------------------------------------------------------------
# (1) Sharded checkpoints read as one model


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
@pytest.mark.parametrize("given", ["folder", "index"])
def test_shards_are_one_model_equal_to_the_state_dict(folders, tensors, kind, given):
    folder = folders[kind]
    (index,) = folder.glob("*.index.json")
    assert split_modules(folder), "the plan must split a module across shards"
    shards = sorted(folder.glob("*-of-*"))
    assert len(shards) >= 3
    with (
        weightscope.load(folder if given == "folder" else index) as model,
        weightscope.load(folders["single"] / "model.safetensors") as single,
    ):
        assert model.source == index
        assert model.format.endswith("-sharded") and model.framework == "pytorch"
        assert model.inputs == [index, *shards, folder / "config.json"]
        # one layer per module, split or not, as read from one file
        assert layers_of(model) == layers_of(single)
        assert model.params == single.params
        names = [t.name for _, t in model.tensors()]
        assert sorted(names) == sorted(tensors)
        for _, tensor in model.tensors():
            np.testing.assert_array_equal(tensor.numpy(), tensors[tensor.name].numpy())
        assert f"read from {len(shards)} shards named by {index.name}" in model.notes
        assert any("split across shards" in note for note in model.notes)
        (config,) = [note for note in model.notes if note.startswith("config.json:")]
        assert "architectures TinyForCausalLM" in config and "model_type tiny" in config
        assert "hidden_size 6" in config and "num_hidden_layers 3" in config

        # a split module computes what torch computes from the state dict
        for module in split_modules(folder):
            layer = model.layer(module)
            assert {t.name.rsplit(".", 1)[0] for t in layer.tensors} == {module}


def test_split_batch_norm_and_dense_compute_what_torch_computes(folders, tensors, tmp_path):
    """A plan that cuts the batch norm and the head between shards; both layers recomputed
    from their canonical tensors."""
    plan = shard_plan(tensors, 1)  # one tensor a shard: every module with two tensors is split
    assert len(plan) == len(tensors)
    write_sharded(tmp_path, tensors, "safetensors", max_bytes=1)
    torch.manual_seed(1)
    module = Tiny().eval()
    module.load_state_dict(tensors)
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 7)).astype(np.float32)
    with weightscope.load(tmp_path) as model:
        conv, bn, head = model.layer("conv"), model.layer("bn"), model.layer("head")
        assert (str(conv.kind), str(bn.kind), str(head.kind)) == ("conv2d", "batch_norm", "dense")
        roles = {t.role: t for t in bn.tensors}
        y = reference.conv(x, conv.kernel.canonical(), conv.tensor("bias").numpy())
        y = reference.batch_norm(
            y,
            roles["moving_mean"].numpy(),
            roles["moving_variance"].numpy(),
            roles["gamma"].numpy(),
            roles["beta"].numpy(),
            epsilon=1e-5,
        )
        expected = module.bn(module.conv(torch.from_numpy(x))).detach().numpy()
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        h = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
        out = reference.dense(h, head.kernel.canonical(), head.tensor("bias").numpy())
        expected = module.head(torch.from_numpy(h)).detach().numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_shards_without_an_index_are_one_model(folders, tensors, tmp_path):
    paths = write_sharded(tmp_path, tensors, "safetensors")
    (tmp_path / "model.safetensors.index.json").unlink()
    with (
        weightscope.load(tmp_path) as model,
        weightscope.load(folders["single"] / "model.safetensors") as single,
    ):
        assert model.source == tmp_path and model.inputs == [tmp_path, *paths]
        assert layers_of(model) == layers_of(single)
        assert f"read from {len(paths)} shards, no index" in model.notes
    paths[1].unlink()
    result = run_cli("inspect", tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"weightscope: {paths[1]}: shard missing from the folder\n"


def test_a_folder_with_one_model_and_its_config(folders):
    with weightscope.load(folders["single"]) as model:
        assert model.format == "safetensors"
        assert model.inputs == [folders["single"] / n for n in ("model.safetensors", "config.json")]
        assert model.notes[-1] == (
            "config.json: architectures TinyForCausalLM; model_type tiny; torch_dtype float32; "
            "hidden_size 6; num_hidden_layers 3; vocab_size 11"
        )
    result = run_cli("inspect", folders["single"], "--no-stats")
    assert result.returncode == 0, result.stderr
    assert "architectures TinyForCausalLM" in result.stdout


def test_the_weights_are_read_beside_other_checkpoints(folders, tensors, tmp_path):
    """A trainer's output folder: the weights beside ``training_args.bin`` and
    ``optimizer.pt`` (PyTorch pickles too) are read, the others named."""
    single = copy_folder(folders["single"], tmp_path / "single")
    torch.save({"learning_rate": 0.1}, single / "training_args.bin")
    torch.save({"state": {}, "param_groups": []}, single / "optimizer.pt")
    with weightscope.load(single) as model:
        assert model.source == single / "model.safetensors"
        assert model.params.total == sum(t.numel() for t in tensors.values()) - 1  # the counter
        assert "the folder also holds optimizer.pt, training_args.bin (not read)" in model.notes
    shards = tmp_path / "shards"
    paths = write_sharded(shards, tensors, "safetensors")
    (shards / "model.safetensors.index.json").unlink()
    torch.save({"learning_rate": 0.1}, shards / "training_args.bin")
    with weightscope.load(shards) as model:
        assert model.inputs == [shards, *paths]
        assert "the folder also holds training_args.bin (not read)" in model.notes


def test_a_shard_count_in_a_name_costs_nothing(folders, tmp_path):
    """Names claiming 10**15 shards: the missing one is named at once, nothing counted to it;
    a lone shard beside the weights' own file is not looked at."""
    data = (folders["single"] / "model.safetensors").read_bytes()
    for number in (1, 3):
        (tmp_path / f"model-{number:016d}-of-1000000000000000.safetensors").write_bytes(data)
    missing = tmp_path / "model-0000000000000002-of-1000000000000000.safetensors"
    assert one_line(tmp_path) == f"{missing}: shard missing from the folder"
    (tmp_path / "model.safetensors").write_bytes(data)
    with weightscope.load(tmp_path) as model:
        assert model.source == tmp_path / "model.safetensors"


def test_a_folder_of_several_models_or_none_is_refused(folders, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/README.md").write_text("nothing here\n")
    result = run_cli("inspect", tmp_path / "a")
    assert result.returncode == 2
    assert result.stderr == (
        f"weightscope: {tmp_path / 'a'}: is a directory, not a model file, and none of its "
        "files is one (README.md)\n"
    )
    both = tmp_path / "b"
    both.mkdir()
    for name in ("x.safetensors", "y.safetensors"):
        (both / name).write_bytes((folders["single"] / "model.safetensors").read_bytes())
    result = run_cli("inspect", both)
    assert result.returncode == 2
    assert result.stderr == (
        f"weightscope: {both}: holds 2 model files, not one model: x.safetensors, "
        "y.safetensors (name one)\n"
    )


def test_compare_takes_folders(folders):
    result = run_cli("compare", folders["safetensors"], folders["bin"], "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "identical"
    assert not data["unmatched_a"] and not data["unmatched_b"]
    assert {pair["a"] for pair in data["pairs"]} >= {"conv", "bn", "head", "layers.0.q_proj"}
    result = run_cli("compare", folders["single"], folders["safetensors"])
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# (2) Damaged and hostile shards: one line naming the file


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def edit_index(folder: Path, change) -> Path:
    (index,) = folder.glob("*.index.json")
    data = json.loads(index.read_text())
    change(data["weight_map"])
    index.write_text(json.dumps(data))
    return index


def one_line(path: Path) -> str:
    result = run_cli("inspect", path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("weightscope: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    return result.stderr.removeprefix("weightscope: ").rstrip("\n")


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_missing_shard_is_named(folders, tmp_path, kind):
    folder = copy_folder(folders[kind], tmp_path / "m")
    (gone,) = folder.glob("*-00002-of-*")
    gone.unlink()
    (index,) = folder.glob("*.index.json")
    assert one_line(folder) == f"{gone}: shard missing: {index.name} places tensors in it"


@pytest.mark.parametrize("outside", ["../x.safetensors", "/etc/passwd", "sub/../../x", "a\\..\\b"])
def test_index_naming_a_file_outside_its_folder_is_refused(folders, tmp_path, outside):
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    # a real shard where the name leads: only the check keeps it from being read
    first = sorted(folder.glob("*-of-*"))[0]
    (tmp_path / "x.safetensors").write_bytes(first.read_bytes())
    index = edit_index(folder, lambda wm: wm.update({"head.bias": outside}))
    assert one_line(index) == f"{index}: shard {outside!r} lies outside the index's folder"


def test_index_naming_a_tensor_its_shard_lacks(folders, tmp_path):
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    shard = sorted(folder.glob("*-of-*"))[0]
    index = edit_index(folder, lambda wm: wm.update({"ghost.weight": shard.name}))
    assert one_line(folder) == (
        f"{shard}: holds no tensor 'ghost.weight', which {index.name} places there"
    )


def test_tensor_in_two_shards(folders, tensors, tmp_path):
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    shards = sorted(folder.glob("*-of-*"))
    last = safetensors_torch.load_file(shards[-1])
    first_name = next(iter(safetensors_torch.load_file(shards[0])))
    safetensors_torch.save_file({**last, first_name: tensors[first_name]}, shards[-1])
    assert one_line(folder) == (
        f"{shards[-1]}: tensor {first_name!r} is also in the shard {shards[0].name}"
    )


def test_tensor_the_index_does_not_name(folders, tmp_path):
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    (index,) = folder.glob("*.index.json")
    name = "head.bias"
    placed = json.loads(index.read_text())["weight_map"][name]
    edit_index(folder, lambda wm: wm.pop(name))
    assert (
        one_line(index)
        == f"{folder / placed}: holds tensor 'head.bias', which {index.name} does not name"
    )


def test_tensor_in_a_shard_the_index_does_not_place_it_in(folders, tmp_path):
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    shards = sorted(folder.glob("*-of-*"))
    index = edit_index(folder, lambda wm: wm.update({"head.bias": shards[0].name}))
    assert one_line(index) == (
        f"{shards[-1]}: holds tensor 'head.bias', which {index.name} places in {shards[0].name!r}"
    )


def test_damaged_shard_is_named(folders, tmp_path):
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    shard = sorted(folder.glob("*-of-*"))[1]
    shard.write_bytes(shard.read_bytes()[:-4])
    line = one_line(folder)
    assert line.startswith(f"{shard}: damaged .safetensors file: ")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "not a shard index: no weight_map of tensors"),
        ('{"weight_map": {}}', "not a shard index: no weight_map of tensors"),
        ('{"weight_map": {"a": 3}}', "tensor 'a': shard is not a file name"),
        ("{", "not a shard index: not JSON: "),
    ],
)
def test_index_that_is_not_one(tmp_path, text, problem):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(text)
    assert one_line(index).startswith(f"{index}: {problem}")


def test_huge_index_is_over_a_limit(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    weight_map = {f"layers.{i}.weight": "model-00001-of-00001.safetensors" for i in range(40_000)}
    index.write_text(json.dumps({"weight_map": weight_map}))
    size = index.stat().st_size
    assert size > 1 << 20
    result = run_cli("inspect", index, "--limit", "max_json_bytes=1M")
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"weightscope: {index}: the index is {size:,} bytes, over the limit max_json_bytes=1M "
        "(raise it with --limit max_json_bytes="
    )
    assert result.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# (3) Other formats' many files: ONNX external data, TensorFlow checkpoint shards


def test_onnx_external_data_in_a_file_per_tensor(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {
        "W": rng.normal(size=(8, 4)).astype(np.float32),
        "B": rng.normal(size=8).astype(np.float32),
        "W2": rng.normal(size=(3, 8)).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1, name="fc1"),
            helper.make_node("Gemm", ["h", "W2"], ["y"], transB=1, name="fc2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    onnx.save_model(
        helper.make_model(graph),
        tmp_path / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B", "W", "W2", "model.onnx"]
    with weightscope.load(tmp_path) as model:
        assert model.format == "onnx"
        assert sorted(p.name for p in model.inputs) == ["B", "W", "W2", "model.onnx"]
        assert [(layer.name, str(layer.kind)) for layer in model.layers] == [
            ("fc1", "dense"),
            ("fc2", "dense"),
        ]
        for _, tensor in model.tensors():
            np.testing.assert_array_equal(tensor.numpy(), arrays[tensor.name])
        assert model.params.total == sum(a.size for a in arrays.values())
    (tmp_path / "W2").unlink()
    assert one_line(tmp_path) == (
        f"{tmp_path / 'model.onnx'}: damaged ONNX model: external data file 'W2' for tensor "
        f"'W2' is missing (expected {tmp_path / 'W2'})"
    )


def test_tensorflow_checkpoint_in_several_shards(tmp_path):
    """``MaxShardSizePolicy`` cuts a tf-keras model's variables across four shards, some into
    slices: each variable read whole, its layer a dense layer that computes what Keras does."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.Input((30,)), tf_keras.layers.Dense(20), tf_keras.layers.Dense(5)]
    )
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=1000)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    prefix = Path(tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"), options=options))
    data = sorted(tmp_path.glob("ckpt.data-*"))
    assert len(data) > 2
    x = np.random.default_rng(0).normal(size=(3, 30)).astype(np.float32)
    expected = model(x).numpy()
    with weightscope.load(tmp_path) as read:
        assert read.format == "tf-checkpoint"
        assert read.inputs == [Path(f"{prefix}.index"), *data]
        assert any("stored as slices" in note for note in read.notes), read.notes
        assert read.params.total == model.count_params()
        dense = [layer for layer in read.layers if str(layer.kind) == "dense"]
        assert len(dense) == 2
        for layer, variables in zip(dense, (model.layers[0], model.layers[1]), strict=True):
            np.testing.assert_array_equal(layer.kernel.numpy(), variables.kernel.numpy())
            x = reference.dense(x, layer.kernel.canonical(), layer.tensor("bias").numpy())
        np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    data[1].unlink()
    assert one_line(tmp_path) == (
        f"{prefix}.index: damaged TensorFlow checkpoint: its data shard {data[1].name} is missing"
    )


# ---------------------------------------------------------------------------------------------
# (4) Scan, and reading without the frameworks


def test_scan_reads_an_indexed_folder_as_one_model(folders, tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import pandas as pd

    out = tmp_path / "scan.parquet"
    result = run_cli("scan", folders["root"], "-o", out, "--json", "--jobs", "1", timeout=120)
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    models = table[table["record"] == "model"]
    indexes = [str(next(folders[k].glob("*.index.json"))) for k in ("safetensors", "bin")]
    assert sorted(models["path"]) == sorted(
        [*indexes, str(folders["single"] / "model.safetensors")]
    )
    summary = json.loads(result.stdout)
    assert summary["errors"] == 0
    # the index's row fingerprints every shard (a changed shard is scanned again)
    row = models.set_index("path").loc[indexes[0]]
    folder = folders["safetensors"]
    assert [entry["path"] for entry in json.loads(row["inputs"])] == [
        *map(str, sorted(folder.glob("*-of-*"))),
        str(folder / "config.json"),
    ]


NO_FRAMEWORK = """
import sys
from weightscope.cli.app import main
for path in sys.argv[1:]:
    assert main(["inspect", path]) == 0, path
print("LOADED:", sorted(m for m in sys.modules if m.split(".")[0] in
      ("torch", "tensorflow", "keras", "onnx", "safetensors", "google")))
"""


def test_reading_shards_imports_no_framework(folders):
    paths = [folders["safetensors"], folders["bin"], folders["single"]]
    result = subprocess.run(
        [sys.executable, "-c", NO_FRAMEWORK, *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "LOADED: []" in result.stdout, result.stdout


def test_checkpoint_manager_folder_is_its_latest_checkpoint(tmp_path):
    """``tf.train.CheckpointManager`` keeps several checkpoints and a ``checkpoint`` file
    naming the latest: the folder is read as that one."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    variable = tf.Variable(np.zeros((3, 2), np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), tmp_path, 3)
    for step in range(3):
        variable.assign(np.full((3, 2), step, np.float32))
        latest = manager.save()
    assert len(list(tmp_path.glob("*.index"))) == 3
    with weightscope.load(tmp_path) as model:
        assert model.source == Path(f"{latest}.index")
        (tensor,) = [t for _, t in model.tensors() if t.counted]
        np.testing.assert_array_equal(tensor.numpy(), np.full((3, 2), 2, np.float32))
        assert any("ckpt-1.index" in note and "not read" in note for note in model.notes)


def test_slices_placed_by_extents_of_several_bytes(tmp_path):
    """A TF1 variable partitioned at rows 0, 35000 and 70000: extents past 63 take two and three
    bytes in the slice keys (OrderedCode); the variable read whole equals TensorFlow's."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf1.get_variable("table", (105_000, 2), partitioner=tf1.fixed_size_partitioner(3))
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            prefix = tf1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    whole = tf.train.load_checkpoint(prefix).get_tensor("table")
    with weightscope.load(prefix) as model:
        (layer,) = model.layers
        (tensor,) = layer.tensors
        assert tensor.native_shape == (105_000, 2)
        np.testing.assert_array_equal(tensor.numpy(), whole)
        assert tensor.stats().count == whole.size


def slice_entry(extents, shape, dtype="float32"):
    from weightscope.formats.tensorflow.bundle import BundleEntry

    return BundleEntry("v", dtype, shape, 0, 0, 0, False, None, "v", extents)


@pytest.mark.parametrize(
    ("extents", "why"),
    [
        ([((0, 2), (0, 3)), ((1, 2), (0, 3))], "slices that overlap"),  # sizes fit, rows 1-2 twice
        ([((0, 2), (0, 3))], "slices that do not add up to the variable"),
        ([((0, 4), (0, 3)), ((4, 1), (-1, -1))], "a slice (4, 1) outside an axis of 4"),
        ([None, ((2, 2), (-1, -1))], "a slice key that does not decode"),
    ],
)
def test_slices_that_do_not_tile_their_variable_are_not_put_together(extents, why):
    from weightscope.formats.tensorflow.bundle import BundleEntry
    from weightscope.formats.tensorflow.slices import assemble

    variable = BundleEntry("v", "float32", (4, 3), 0, 0, 0, True)
    parts = [
        slice_entry(e, (3, 3) if e is None else tuple(3 if n == -1 else n for _, n in e))
        for e in extents
    ]
    assert assemble(variable, parts, [None] * len(parts)) == why  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------
# (5) What an index says of its size, and shards without an index in a scan


def test_total_size_huggingface_hub_writes_is_what_the_shards_hold(tensors, tmp_path):
    """``huggingface_hub.save_torch_state_dict`` (what ``save_pretrained`` calls), tied weights
    included: its ``metadata.total_size`` is the bytes the shards' tensors hold, and no note."""
    hub = pytest.importorskip("huggingface_hub")
    tied = dict(tensors, **{"lm_head.weight": tensors["head.weight"]})
    hub.save_torch_state_dict(tied, tmp_path, max_shard_size=300)
    index = tmp_path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    assert len(set(data["weight_map"].values())) > 2
    with weightscope.load(index) as model:
        assert not any("total_size" in note for note in model.notes), model.notes
        held = sum(t.stored().nbytes for _, t in model.tensors())
    assert held == data["metadata"]["total_size"]


@pytest.mark.parametrize(
    ("total", "note"),
    [
        (12, "metadata.total_size is 12 bytes, the shards' tensors hold {held:,}"),
        ("big", 'metadata.total_size "big" is not a byte count'),
        (-1, "metadata.total_size -1 is not a byte count"),
    ],
)
def test_a_total_size_the_shards_do_not_hold_is_a_note(folders, tmp_path, total, note):
    """Nothing is read by it, and writers fill it loosely: a note, the model read."""
    folder = copy_folder(folders["safetensors"], tmp_path / "m")
    (index,) = folder.glob("*.index.json")
    data = json.loads(index.read_text())
    held = data["metadata"]["total_size"]
    data["metadata"]["total_size"] = total
    index.write_text(json.dumps(data))
    with weightscope.load(index) as model:
        assert f"{index.name}: {note.format(held=held)}" in " ".join(model.notes)
    result = run_cli("inspect", index, "--no-stats")
    assert result.returncode == 0 and "total_size" in result.stdout, result.stderr


def test_scan_reads_shards_without_an_index_as_one_model(folders, tensors, tmp_path):
    """A folder of ``model-0000N-of-0000M.safetensors`` and no index: one row, under the first
    shard's path, fingerprinting every shard; a set with a shard missing stays a row a shard."""
    from weightscope.scan import scan

    loose = tmp_path / "zoo/loose"
    paths = write_sharded(loose, tensors, "safetensors")
    (loose / "model.safetensors.index.json").unlink()
    (loose / "config.json").write_text(json.dumps(CONFIG))
    broken = tmp_path / "zoo/broken"
    gaps = write_sharded(broken, tensors, "safetensors")
    (broken / "model.safetensors.index.json").unlink()
    gaps[1].unlink()
    out = tmp_path / "zoo.jsonl"
    summary = scan([tmp_path / "zoo"], out, jobs=1, timeout=120)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    models = {row["path"]: row for row in rows if row["record"] == "model"}
    assert sorted(models) == sorted([str(paths[0]), str(gaps[0]), *map(str, gaps[2:])])
    assert summary.errors == 0, [row["error"] for row in models.values()]
    with weightscope.load(folders["single"] / "model.safetensors") as single:
        assert models[str(paths[0])]["params"] == single.params.total
    fingerprinted = [entry["path"] for entry in json.loads(models[str(paths[0])]["inputs"])]
    assert fingerprinted == [*map(str, paths), str(loose / "config.json")]
    layers = [row for row in rows if row["record"] == "layer" and row["path"] == str(paths[0])]
    assert len(layers) == len({name.rsplit(".", 1)[0] for name in tensors})
