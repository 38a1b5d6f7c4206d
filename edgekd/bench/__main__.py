"""`python -m edgekd.bench MODEL...`: the same command as `edgekd bench`, without the full CLI."""

import typer

from edgekd.bench.command import bench

typer.run(bench)
