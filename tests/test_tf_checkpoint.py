"""TensorFlow checkpoint bundles (``prefix.index`` + ``prefix.data-00000-of-00001``), read by
weightscope without TensorFlow and checked against TensorFlow's own reader and the Keras model
that wrote them: every variable with TensorFlow's shape, dtype and values; totals equal to the
model's weights (optimizer state listed, never counted); kinds and canonical tensors that
recompute the model's own conv and dense outputs. Hostile indexes are built by a small table
writer here (independent of the reader) and each must give one line and exit status 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

from cli_runner import run_cli  # noqa: E402
from tf_bundles import HEADER, _block, _bundle, _entry, _field, _varint, write_index  # noqa: E402

import weightscope  # noqa: E402
from weightscope.formats.tensorflow import table  # noqa: E402

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A conv / batch norm / dense model beside an embedding, both fitted one step with Adam
    (so optimizer slots exist), saved by ``tf.train.Checkpoint.write`` and by tf-keras
    ``save_weights`` in TF format."""
    tf_keras.utils.set_random_seed(3)
    image = tf_keras.Input((8, 8, 3))
    conv = tf_keras.layers.Conv2D(4, 3, name="conv")(image)
    norm = tf_keras.layers.BatchNormalization(name="norm")(conv)
    flat = tf_keras.layers.Flatten()(norm)
    out = tf_keras.layers.Dense(5, name="fc")(flat)
    model = tf_keras.Model(image, out)
    model.compile(optimizer=tf_keras.optimizers.Adam(), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((4, 8, 8, 3)), rng.random((4, 5)), verbose=0)
    ids = tf_keras.Input((3,), dtype="int32")
    embedded = tf_keras.layers.Embedding(10, 6, name="emb")(ids)
    words = tf_keras.Model(ids, tf_keras.layers.Flatten()(embedded))
    folder = tmp_path_factory.mktemp("tf_checkpoint")
    checkpoint = tf.train.Checkpoint(model=model, words=words, optimizer=model.optimizer)
    written = checkpoint.save(str(folder / "ckpt"))  # save, not write: keeps save_counter
    model.save_weights(str(folder / "weights" / "x.ckpt"))
    return {"model": model, "words": words, "prefix": written, "folder": folder}


def _index(trained: dict[str, Any]) -> Path:
    return Path(trained["prefix"] + ".index")


def test_every_variable_is_what_tensorflow_reads(trained: dict[str, Any]) -> None:
    reader = tf.train.load_checkpoint(trained["prefix"])
    dtypes = reader.get_variable_to_dtype_map()
    with weightscope.load(_index(trained)) as model:
        seen = {}
        for _, tensor in model.tensors():
            seen[tensor.name] = tensor
            expected = reader.get_tensor(tensor.name)
            assert tensor.native_shape == expected.shape, tensor.name
            assert tensor.dtype == dtypes[tensor.name].name, tensor.name
            np.testing.assert_array_equal(tensor.numpy(), expected, err_msg=tensor.name)
        numeric = {name for name, dtype in dtypes.items() if dtype != tf.string}
        assert set(seen) == numeric
        assert any("_CHECKPOINTABLE_OBJECT_GRAPH" in note for note in model.notes)
        assert model.format == "tf-checkpoint" and model.framework == "tensorflow"


def test_totals_are_the_models_weights_not_optimizer_state(trained: dict[str, Any]) -> None:
    keras_model, words = trained["model"], trained["words"]
    with weightscope.load(_index(trained)) as model:
        params = model.params
        assert params.total == keras_model.count_params() + words.count_params()
        non_trainable = sum(int(np.prod(w.shape)) for w in keras_model.non_trainable_weights)
        assert params.non_trainable == non_trainable == 8  # moving mean and variance
        optimizer = model.layer("optimizer")
        roles = {t.role for t in optimizer.tensors}
        assert "_learning_rate" in roles and "_iterations" in roles
        # the optimizer's variables (iterations, two moments per weight) and its learning rate
        assert len(optimizer.tensors) == len(trained["model"].optimizer.variables()) + 1
        assert not any(t.counted for t in optimizer.tensors)
        assert optimizer.param_counts.total == 0
        assert model.layer("save_counter").param_counts.total == 0


def test_kinds_and_layouts_are_keras(trained: dict[str, Any]) -> None:
    with weightscope.load(_index(trained)) as model:
        kinds = {layer.name: layer.kind.value for layer in model.layers}
        assert kinds == {
            "model/layer_with_weights-0": "conv2d",
            "model/layer_with_weights-1": "batch_norm",
            "model/layer_with_weights-2": "dense",
            "words/layer_with_weights-0": "embedding",
            "optimizer": "unknown",
            "save_counter": "unknown",
        }
        conv = model.layer("model/layer_with_weights-0")
        assert conv.framework == "keras" and conv.inferred
        layouts = {t.role: (t.native_layout, t.canonical_shape) for t in conv.tensors}
        assert layouts == {"kernel": ("HWIO", (4, 3, 3, 3)), "bias": ("C", (4,))}
        norm = model.layer("model/layer_with_weights-1")
        assert {t.role: t.trainable for t in norm.tensors} == {
            "gamma": None, "beta": None, "moving_mean": False, "moving_variance": False,
        }  # fmt: skip
        dense = model.layer("model/layer_with_weights-2")
        assert dense.tensors[1].native_layout == "IO"
        assert dense.tensors[1].canonical_shape == (5, 144)


def _canonical(layer: Any) -> dict[str, np.ndarray]:
    return {t.role: t.canonical() for t in layer.tensors}


def test_conv_and_dense_outputs_recomputed_from_canonical_tensors(
    trained: dict[str, Any],
) -> None:
    keras_model = trained["model"]
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
    conv_out = tf_keras.Model(keras_model.input, keras_model.get_layer("conv").output)(x).numpy()
    flat = tf_keras.Model(keras_model.input, keras_model.layers[-2].output)(x).numpy()
    dense_out = keras_model(x).numpy()
    with weightscope.load(_index(trained)) as model:
        conv = _canonical(model.layer("model/layer_with_weights-0"))
        dense = _canonical(model.layer("model/layer_with_weights-2"))
    kernel = conv["kernel"]  # OIHW
    channels_first = x.transpose(0, 3, 1, 2)
    patches = np.lib.stride_tricks.sliding_window_view(channels_first, (3, 3), axis=(2, 3))
    mine = np.einsum("nihwkl,oikl->nohw", patches, kernel) + conv["bias"][None, :, None, None]
    np.testing.assert_allclose(mine, conv_out.transpose(0, 3, 1, 2), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        flat @ dense["kernel"].T + dense["bias"], dense_out, rtol=RTOL, atol=ATOL
    )


def test_save_weights_checkpoint_named_by_its_prefix(trained: dict[str, Any]) -> None:
    prefix = trained["folder"] / "weights" / "x.ckpt"
    assert not prefix.exists()
    result = run_cli("inspect", prefix)
    assert result.returncode == 0, result.stderr
    assert "x.ckpt.index" in result.stdout and "conv2d" in result.stdout
    with weightscope.load(prefix) as model:
        assert model.params.total == trained["model"].count_params()


# ---------------------------------------------------------------------------------------------
# hostile indexes, written by a table writer of this test's own


def test_the_test_table_writer_writes_what_the_reader_reads(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32)
    data = values.tobytes()
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 24, data))], data)
    with weightscope.load(index) as model:
        np.testing.assert_array_equal(model.layer("fc").tensors[0].numpy(), values.reshape(2, 3))
    # and TensorFlow reads it too: the writer is a valid bundle
    np.testing.assert_array_equal(
        tf.train.load_checkpoint(str(tmp_path / "h")).get_tensor("fc/kernel"),
        values.reshape(2, 3),
    )


def _refused(path: Path, words: str) -> None:
    result = run_cli("inspect", path)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"weightscope: {path}:"), lines[0]
    assert words in lines[0], lines[0]


def test_truncated_index_is_one_line(trained: dict[str, Any], tmp_path: Path) -> None:
    data = _index(trained).read_bytes()
    cut = tmp_path / "cut.index"
    cut.write_bytes(data[: len(data) - 20])
    _refused(cut, "magic")
    tiny = tmp_path / "tiny.index"
    tiny.write_bytes(data[:30])
    _refused(tiny, "footer")


def test_bad_footer_magic_is_one_line(trained: dict[str, Any], tmp_path: Path) -> None:
    data = bytearray(_index(trained).read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.index"
    bad.write_bytes(bytes(data))
    _refused(bad, "magic number")


def test_offset_beyond_the_shard_is_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 8, 24))], bytes(24))
    _refused(index, "lie past the end of h.data-00000-of-00001")


def test_size_that_does_not_fit_the_shape_is_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 20))], bytes(24))
    _refused(index, "20 bytes declared")


def test_block_running_past_the_table_is_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 24))], bytes(24))
    data = bytearray(index.read_bytes())
    footer = len(data) - 48
    data[footer : footer + 2] = b"\x7f\x7f"  # metaindex offset 127, size 127
    data[footer + 2 : footer + 4] = _varint(10_000)[:2]  # index offset past the end
    index.write_bytes(bytes(data))
    result = run_cli("inspect", index)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_missing_shard_is_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 24))], bytes(24))
    (tmp_path / "h.data-00000-of-00001").unlink()
    _refused(index, "missing")


def test_snappy_block_is_refused_in_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 24))], bytes(24))
    data = bytearray(index.read_bytes())
    data[len(_block([HEADER, (b"fc/kernel", _entry((2, 3), 0, 24))]))] = 1  # data block type
    index.write_bytes(bytes(data))
    _refused(index, "Snappy")


def test_tensorflow_writes_its_index_blocks_uncompressed(trained: dict[str, Any]) -> None:
    """What the reader relies on to need no Snappy: every block TF wrote has type 0."""
    data = _index(trained).read_bytes()
    assert list(table.entries(data))  # the walk checks each block's compression byte
    assert len(data) > 1000


def test_tf1_saver_checkpoint_slots_and_global_step_not_counted(tmp_path: Path) -> None:
    """A TF1 ``Saver`` names variables by scope (``dense/kernel``) and Adam's slots under them
    (``dense/kernel/Adam``, ``Adam_1``), beside ``beta1_power``, ``beta2_power`` and
    ``global_step``: only the model's variables are parameters."""
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, (None, 4))
        kernel = tf1.get_variable("dense/kernel", (4, 3))
        bias = tf1.get_variable("dense/bias", (3,), initializer=tf1.ones_initializer())
        conv = tf1.get_variable("conv/kernel", (3, 3, 2, 5))
        y = tf.matmul(x, kernel) + bias
        loss = tf.reduce_sum(y) + tf.reduce_sum(conv)
        step = tf1.train.get_or_create_global_step()
        train = tf1.train.AdamOptimizer().minimize(loss, global_step=step)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            session.run(train, {x: np.ones((2, 4))})
            prefix = tf1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
            inputs = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
            expected = session.run(y, {x: inputs})
    reader = tf.train.load_checkpoint(prefix)
    with weightscope.load(prefix) as model:
        kinds = {layer.name: layer.kind.value for layer in model.layers}
        assert kinds == {
            "conv": "conv2d", "dense": "dense", "optimizer": "unknown", "global_step": "unknown",
        }  # fmt: skip
        assert model.params.total == 4 * 3 + 3 + 3 * 3 * 2 * 5
        slots = {t.role for t in model.layer("optimizer").tensors}
        assert slots == {
            "beta1_power", "beta2_power", "conv/kernel/Adam", "conv/kernel/Adam_1",
            "dense/bias/Adam", "dense/bias/Adam_1", "dense/kernel/Adam", "dense/kernel/Adam_1",
        }  # fmt: skip
        for _, tensor in model.tensors():
            np.testing.assert_array_equal(tensor.numpy(), reader.get_tensor(tensor.name))
        dense = _canonical(model.layer("dense"))
    np.testing.assert_allclose(
        inputs @ dense["kernel"].T + dense["bias"], expected, rtol=RTOL, atol=ATOL
    )


def _header(num_shards: int) -> tuple[bytes, bytes]:
    return (b"", _field(1, num_shards))


def test_tensors_are_read_from_their_own_shard(tmp_path: Path) -> None:
    first, second = np.arange(4, dtype=np.float32), np.arange(10, 16, dtype=np.float32)
    index = tmp_path / "s.index"
    write_index(
        index,
        [
            _header(2),
            (b"fc/bias", _entry((4,), 0, 16, first.tobytes())),
            (b"fc/kernel", _field(3, 1) + _entry((2, 3), 4, 24, second.tobytes())),
        ],
    )  # the shard id comes first: protobuf fields may come in any order
    (tmp_path / "s.data-00000-of-00002").write_bytes(first.tobytes())
    (tmp_path / "s.data-00001-of-00002").write_bytes(bytes(4) + second.tobytes())
    with weightscope.load(index) as model:
        fc = {t.role: t.numpy() for t in model.layer("fc").tensors}
        np.testing.assert_array_equal(fc["bias"], first)
        np.testing.assert_array_equal(fc["kernel"], second.reshape(2, 3))
        assert len(model.inputs) == 3  # the index and both shards: never written onto
    reader = tf.train.load_checkpoint(str(tmp_path / "s"))  # a bundle TensorFlow reads too
    np.testing.assert_array_equal(reader.get_tensor("fc/kernel"), second.reshape(2, 3))


def test_shard_id_out_of_range_is_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _field(3, 1) + _entry((2, 3), 0, 24))], bytes(24))
    _refused(index, "shard 1 of 1")


def _state(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_no_command_changes_the_bundle_nor_writes_onto_a_shard(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    index = _index(trained)
    folder = index.parent
    before = _state(folder)
    conv = "model/layer_with_weights-0"
    out = tmp_path / "out"
    out.mkdir()
    commands: list[list[str | Path]] = [
        ["inspect", index, "--json"],
        ["export", index, "-o", out / "w.npz"],
        ["plot", index, "--layer", conv, "-o", out / "k.png"],
        ["init", index],
        ["params", index],
        ["explain", index, conv],
        ["report", index, "-o", out / "r.html"],
        ["compare", index, index],
    ]
    for arguments in commands:
        result = run_cli(*arguments)
        assert result.returncode == 0, (arguments, result.stderr)
    shard = Path(trained["prefix"] + ".data-00000-of-00001")
    link = tmp_path / "link.npz"  # the shard under an export's name
    os.link(shard, link)
    result = run_cli("export", index, "-o", link)
    assert result.returncode == 2, result.stdout
    assert "which is read as input" in result.stderr
    assert _state(folder) == before


def test_recurrent_layers_recompute_their_full_sequences(tmp_path: Path) -> None:
    """A Keras LSTM, a GRU (reset_after: its (2, 3u) bias split into input and recurrent rows)
    and a reversed SimpleRNN keep their variables in ``.../cell/``: the layer is named without
    it, and its canonical tensors recompute each layer's whole output sequence."""
    pytest.importorskip("torch")
    import reference as ref

    tf_keras.utils.set_random_seed(4)
    inputs = tf_keras.Input((5, 3))
    lstm = tf_keras.layers.LSTM(4, return_sequences=True, name="lstm")(inputs)
    gru = tf_keras.layers.GRU(2, return_sequences=True, name="gru")(lstm)
    rnn = tf_keras.layers.SimpleRNN(3, return_sequences=True, go_backwards=True, name="rnn")(gru)
    keras_model = tf_keras.Model(inputs, rnn)
    for weight in keras_model.weights:  # biases away from zero, so that their parts matter
        weight.assign(np.random.default_rng(5).standard_normal(weight.shape) * 0.5)
    prefix = tf.train.Checkpoint(model=keras_model).write(str(tmp_path / "rnn"))
    x = np.random.default_rng(6).standard_normal((2, 5, 3)).astype(np.float32)
    outputs = tf_keras.Model(inputs, [lstm, gru, rnn])(x)
    with weightscope.load(prefix) as model:
        layers = [model.layer(f"model/layer_with_weights-{i}") for i in range(3)]
        assert [layer.kind.value for layer in layers] == ["lstm", "gru", "simple_rnn"]
        gru_bias = {t.role: t.part for t in layers[1].tensors if t.part}
        assert gru_bias == {"bias": "[0]", "recurrent_bias": "[1]"}
        assert model.params.total == keras_model.count_params()
        computed = [
            ref.canonical_recurrent_layer("lstm", x, layers[0]),
            ref.canonical_recurrent_layer("gru", outputs[0].numpy(), layers[1], reset_after=True),
            ref.canonical_recurrent_layer(
                "simple_rnn", outputs[1].numpy(), layers[2], go_backwards=True
            ),
        ]
    for mine, theirs in zip(computed, outputs, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=RTOL, atol=ATOL)


def test_mutated_indexes_fail_only_with_one_line_errors(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """Bytes of a real index flipped, cut out or inserted, 400 times: each reads, or is refused
    with a WeightscopeError (one line), never another exception, also when every tensor is
    read. (3,000 such mutants passed when the reader was written.)"""
    import random

    from weightscope.errors import WeightscopeError

    source = _index(trained).read_bytes()
    shard = Path(trained["prefix"] + ".data-00000-of-00001")
    (tmp_path / "f.data-00000-of-00001").write_bytes(shard.read_bytes())
    rng = random.Random(0)
    refused = 0
    for _ in range(400):
        data = bytearray(source)
        for _ in range(rng.randint(1, 6)):
            at, choice = rng.randrange(len(data)), rng.random()
            if choice < 0.6:
                data[at] = rng.randrange(256)
            elif choice < 0.8:
                del data[at : at + rng.randint(1, 20)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
        (tmp_path / "f.index").write_bytes(bytes(data))
        try:
            with weightscope.load(tmp_path / "f.index") as model:
                for _, tensor in model.tensors():
                    tensor.numpy()
        except WeightscopeError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert 0 < refused < 400


def test_partitioned_variable_is_read_whole_from_its_slices(tmp_path: Path) -> None:
    """A TF1 partitioned variable is stored as slices under binary keys (a zero byte, the
    variable's name in OrderedCode, the extents) beside an entry that holds only its full
    shape: the slices, placed by the extents their keys hold, make the variable, read as one
    tensor of its layer and counted once."""
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        tf1.get_variable("emb/embeddings", (10, 4), partitioner=tf1.fixed_size_partitioner(2))
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            prefix = tf1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    whole = tf.train.load_checkpoint(prefix).get_tensor("emb/embeddings")
    with weightscope.load(prefix) as model:
        assert model.params.total == whole.size == 40
        layer = model.layer("emb")
        assert str(layer.kind) == "embedding"
        (tensor,) = layer.tensors
        assert tensor.native_shape == (10, 4)
        np.testing.assert_array_equal(tensor.numpy(), whole)
        assert tensor.stats().count == 40
        assert np.isclose(tensor.stats().mean, whole.mean(dtype=np.float64), atol=1e-6)
        assert any("1 variable stored as slices" in note for note in model.notes)


# ---------------------------------------------------------------------------------------------
# checksums, byte order


def test_crc32c_matches_a_bitwise_one_and_tensorflows(trained: dict[str, Any]) -> None:
    """The numpy CRC32C (lanes joined by shifts) against the test writer's bit-by-bit one, at
    lengths around each of its paths, and against every CRC TensorFlow stored."""
    from tf_bundles import _crc32c, _mask

    from weightscope.formats.tensorflow import crc32c
    from weightscope.formats.tensorflow.bundle import read_index

    rng = np.random.default_rng(0)
    for length in (0, 1, 7, 4095, 4096, 4099, 10_000, 70_001):
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        assert crc32c.crc32c(data) == _crc32c(data), length
        cut = length // 3
        assert crc32c.crc32c(data[cut:], crc32c.crc32c(data[:cut])) == _crc32c(data), length
    assert crc32c.mask(0x12345678) == _mask(0x12345678)
    _, entries = read_index(_index(trained).read_bytes())
    shard = Path(trained["prefix"] + ".data-00000-of-00001").read_bytes()
    numeric = [e for e in entries if e.sized]
    assert numeric and all(e.crc32c is not None for e in numeric)
    for entry in numeric:
        stored = shard[entry.offset : entry.offset + entry.size]
        assert crc32c.mask(crc32c.crc32c(stored)) == entry.crc32c, entry.name


def test_damaged_tensor_data_fails_its_crc_in_one_line(tmp_path: Path) -> None:
    from weightscope.errors import CorruptFileError

    values = np.arange(6, dtype=np.float32)
    data = values.tobytes()
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 24, data))], data)
    damaged = bytearray(data)
    damaged[5] ^= 0x01  # one bit of one float: a value still, but not the one saved
    (tmp_path / "h.data-00000-of-00001").write_bytes(bytes(damaged))
    with (
        weightscope.load(index) as model,
        pytest.raises(CorruptFileError, match="'fc/kernel' fails its CRC32C check"),
    ):
        model.layer("fc").tensors[0].numpy()
    result = run_cli("export", index, "-o", tmp_path / "w.npz")
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fails its CRC32C check" in lines[0], result.stderr
    with pytest.raises(Exception, match="Checksum does not match"):  # TensorFlow refuses it too
        tf.train.load_checkpoint(str(tmp_path / "h")).get_tensor("fc/kernel")


def test_damaged_index_block_fails_its_crc_in_one_line(tmp_path: Path) -> None:
    index = _bundle(tmp_path, [(b"fc/kernel", _entry((2, 3), 0, 24))], bytes(24))
    data = bytearray(index.read_bytes())
    at = data.index(b"fc/kernel")
    data[at] = ord("g")  # a key changed: framing intact, only the block CRC can tell
    index.write_bytes(bytes(data))
    _refused(index, "data block at byte 0 fails its CRC32C check")


def test_big_endian_bundle_reads_its_values(tmp_path: Path) -> None:
    """A header declaring big-endian tensors (TensorFlow on s390x writes them): the bytes as
    stored carry the CRC, the values are read in that byte order. Written by hand: TensorFlow
    on a little-endian machine writes only little-endian bundles."""
    values = (np.arange(-3, 3).reshape(2, 3) / 4).astype(">f4")
    data = values.tobytes()
    index = tmp_path / "b.index"
    write_index(
        index, [(b"", _field(1, 1) + _field(2, 1)), (b"fc/kernel", _entry((2, 3), 0, 24, data))]
    )
    (tmp_path / "b.data-00000-of-00001").write_bytes(data)
    with weightscope.load(index) as model:
        tensor = model.layer("fc").tensors[0]
        np.testing.assert_array_equal(tensor.numpy(), values.astype("<f4"))
        assert tensor.stats().mean == pytest.approx(float(values.mean()))


def test_an_object_graph_that_does_not_decode_leaves_path_names(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """The object graph is read only for the names variables were saved under: damaged, it is
    said in a note and the layers keep their paths and shape-inferred kinds."""
    from weightscope.formats.tensorflow.bundle import read_index

    index = _index(trained)
    _, entries = read_index(index.read_bytes())
    graph = next(e for e in entries if e.name == "_CHECKPOINTABLE_OBJECT_GRAPH")
    shard = bytearray(Path(trained["prefix"] + ".data-00000-of-00001").read_bytes())
    start = graph.offset + graph.size - 64
    shard[start : graph.offset + graph.size] = b"\xff" * 64  # a varint that never ends
    (tmp_path / "g.index").write_bytes(index.read_bytes())
    (tmp_path / "g.data-00000-of-00001").write_bytes(bytes(shard))
    with weightscope.load(tmp_path / "g.index") as model:
        assert any("the object graph does not decode" in note for note in model.notes)
        assert model.layer("model/layer_with_weights-0").kind.value == "conv2d"
        assert (
            model.params.total == trained["model"].count_params() + trained["words"].count_params()
        )
