"""The Spark engine's entry point for `spark-submit` on a cluster: `audience train
--engine spark` with the cluster's master and settings, e.g.

    spark-submit --master yarn --driver-memory 4g \\
        "$(python -c 'import audience_cli.spark_job as j; print(j.__file__)')" \\
        s3a://bucket/log/ --out /mnt/artifacts

Its arguments are `audience train`'s (LOG --out DIR --model ... --n ...)."""

from __future__ import annotations

import sys

from audience_cli.main import main


def run(argv: list[str]) -> int:
    """`audience train --engine spark` with `argv`."""
    return main(["train", *argv, "--engine", "spark"])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
