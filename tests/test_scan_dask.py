"""``weightscope scan --dask ADDRESS`` on a real ``distributed.LocalCluster`` (three worker
processes): the same table as the local workers make of the same folder (the zoo of
``test_scan``: one real file per format, damaged files, a README); the work really spread over
the cluster's workers; an unreachable scheduler refused with one line."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from cli_runner import run_cli  # noqa: E402
from test_scan import DAMAGED, MODELS, build_zoo, model_rows, read_table  # noqa: E402

import weightscope.scan.cluster  # noqa: E402
from weightscope.cli.app import main as cli_main  # noqa: E402

# a three-worker LocalCluster, started once for the module: one xdist worker
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.slow,
    pytest.mark.xdist_group("scan_dask"),
]

KEY_PREFIX = "weightscope-scan-"
COUNT = len(MODELS) + len(DAMAGED)


@pytest.fixture(scope="module")
def cluster() -> Any:
    with (
        distributed.LocalCluster(
            n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        client.wait_for_workers(3, timeout=60)
        yield local, client


def scan(*args: str | Path, status: int = 0) -> Any:
    result = run_cli("scan", *args, timeout=120)
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def scans(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The zoo scanned by two local workers, then on the cluster (its task stream recorded)."""
    local, client = cluster
    zoo = build_zoo(tmp_path_factory.mktemp("zoo"))
    out = tmp_path_factory.mktemp("out")
    scan(zoo, "-o", out / "local.parquet", "--jobs", "2", "--json")
    with distributed.get_task_stream(client=client) as stream:
        result = scan(zoo, "-o", out / "dask.parquet", "--dask", local.scheduler_address, "--json")
    return {
        "zoo": zoo,
        "out": out,
        "local": read_table(out / "local.parquet"),
        "dask": read_table(out / "dask.parquet"),
        "summary": json.loads(result.stdout),
        "stderr": result.stderr,
        "stream": [r for r in stream.data if str(r["key"]).startswith(KEY_PREFIX)],
    }


def test_dask_scan_gives_the_local_table(scans):
    local = scans["local"].drop(columns=["seconds"])
    on_cluster = scans["dask"].drop(columns=["seconds"])
    assert len(on_cluster) > COUNT  # model rows and layer rows
    pd.testing.assert_frame_equal(on_cluster, local, check_exact=True)
    zoo = scans["zoo"]
    assert set(model_rows(on_cluster).index) == {str(zoo / n) for n in [*MODELS, *DAMAGED]}
    summary = scans["summary"]
    assert summary["files"] == summary["scanned"] == COUNT
    assert summary["errors"] == len(DAMAGED) and summary["written"] is True
    assert scans["stderr"] == ""
    assert (scans["dask"]["seconds"].dropna() > 0).all()  # timed on the workers


def test_damaged_files_are_rows_on_the_cluster(scans):
    models = model_rows(scans["dask"])
    for name in DAMAGED:
        path = scans["zoo"] / name
        row = models.loc[str(path)]
        assert row["error"].startswith(f"{path}: ") and "\n" not in row["error"]
        assert row["error_type"] in {"CorruptFileError", "UnsupportedFormatError"}
        assert not pd.isna(row["sha256"])  # fingerprinted, as locally
    assert models["error"].notna().sum() == len(DAMAGED)


def test_the_work_ran_on_several_workers(cluster, scans):
    _, client = cluster
    workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 3
    # the scheduler's task stream: one scan task per file, run by the cluster's workers
    stream = scans["stream"]
    keys = {str(record["key"]) for record in stream}
    assert len(keys) == len(stream) == COUNT
    assert len({key.rsplit("-", 1)[0] for key in keys}) == 1  # one batch
    ran_on = {record["worker"] for record in stream}
    assert ran_on <= workers
    assert len(ran_on) >= 2, ran_on

    # the workers' own logs agree: each task computed by exactly the worker the stream names
    def scan_tasks_computed(dask_worker: Any, prefix: str = KEY_PREFIX) -> list[str]:
        """The scan tasks this worker computed (a transition to ``memory`` in its state log).
        Defined here, so that it travels by value: by reference, each worker would import this
        module, and with it the frameworks that build the zoo."""
        log = dask_worker.state.log
        return sorted({str(e[0]) for e in log if str(e[0]).startswith(prefix) and e[2] == "memory"})

    computed = client.run(scan_tasks_computed)
    by_key = {key: worker for worker, keys in computed.items() for key in keys}
    assert sum(len(keys) for keys in computed.values()) == COUNT  # none computed twice
    assert by_key == {str(record["key"]): record["worker"] for record in stream}
    # and those workers are processes of their own, neither this one nor the command's
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()


def test_a_rerun_on_the_cluster_reads_nothing(cluster, scans):
    local, client = cluster
    out = scans["out"] / "dask.parquet"
    before = out.stat().st_mtime_ns
    with distributed.get_task_stream(client=client) as stream:
        result = scan(scans["zoo"], "-o", out, "--dask", local.scheduler_address, "--json")
    summary = json.loads(result.stdout)
    assert (summary["scanned"], summary["reused"]) == (0, COUNT)
    assert summary["written"] is False and out.stat().st_mtime_ns == before
    assert not [r for r in stream.data if str(r["key"]).startswith(KEY_PREFIX)]


def test_an_unknown_address_scheme_is_one_line(scans, tmp_path):
    out = tmp_path / "t.parquet"
    address = "nosuch://scheduler:8786"
    result = scan(scans["zoo"], "-o", out, "--dask", address, status=2)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"weightscope: --dask {address}: cannot reach the scheduler")
    assert not out.exists()


def test_an_unreachable_scheduler_is_one_line(scans, tmp_path, monkeypatch, capsys):
    # run in this process, to shorten the 20 s connection time-out of the command line
    monkeypatch.setattr(weightscope.scan.cluster, "CONNECT_TIMEOUT", "2s")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    out = tmp_path / "t.parquet"
    status = cli_main(["scan", str(scans["zoo"]), "-o", str(out), "--dask", address])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"weightscope: --dask {address}: cannot reach the scheduler")
    assert "2 s" in lines[0]
    assert not out.exists()
