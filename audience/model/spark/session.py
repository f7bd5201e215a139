"""The Spark session the engine runs in."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from audience.errors import ConfigError

#: Settings every session gets: times in UTC (as the canonical table holds them), and
#: in local mode a driver that listens on 127.0.0.1 only, without the web UI.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",  # a train prints its own progress lines
}
#: Set by spark-submit for the Python program it runs (PySpark's `PythonRunner`).
SUBMITTED = "PYSPARK_GATEWAY_PORT"
LOCAL_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
}


def cut(frame: Any) -> Any:
    """`frame` computed once and its plan cut there (for a frame read several times, or
    a plan grown too long), kept on the executors' disks: in memory it took what joins
    and aggregations need (the 10x train with a 1 GB driver ran out of memory)."""
    from pyspark import StorageLevel

    return frame.localCheckpoint(eager=True, storageLevel=StorageLevel.DISK_ONLY)


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """`--spark-conf k=v` flags as a dict; a flag without `=` is a ConfigError."""
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("spark-conf", f"expected key=value, got {pair!r}")
        conf[key.strip()] = value.strip()
    return conf


def session(master: str | None = "local[2]", conf: dict[str, str] | None = None) -> Any:
    """A Spark session on `master` (local[N], spark://host:port, yarn, ...) with `conf`
    on top of the engine's own settings; without a master, spark-submit's (when this
    runs under it) or else local[*]. Java must be installed: without it, a ConfigError
    says so instead of PySpark's launcher failure."""
    if shutil.which("java") is None and SUBMITTED not in os.environ:
        raise ConfigError(
            "engine", "the Spark engine needs Java (Debian: apt-get install default-jre-headless)"
        )
    from pyspark.sql import SparkSession

    if master is None and SUBMITTED not in os.environ:
        master = "local[*]"
    local = master is not None and master.startswith("local")
    if local:  # its Python workers run this interpreter: they import audience and Polars
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = BASE_CONF | (LOCAL_CONF if local else {}) | (conf or {})
    builder = SparkSession.builder.appName("audience")
    if master is not None:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    # PySpark checks pandas' version on Arrow transfers; this engine uses no pandas.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def running(master: str | None, conf: dict[str, str] | None = None) -> Iterator[Any]:
    """`session` for the length of the block, stopped after it unless it was running
    before (a notebook's, a test's): what this code did not start, it does not stop."""
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    spark = session(master, conf)
    try:
        yield spark
    finally:
        if before is None:
            spark.stop()
