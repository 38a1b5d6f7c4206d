"""What every `edgekd train` command group shares: how a group is made, logging, and one-line errors
for mistakes a user can fix."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import typer

USER_ERROR = 2


def command_group(name: str, help: str) -> typer.Typer:
    """A typer group as every `edgekd train` group is: help when called bare, plain tracebacks."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False)


def setup_logging(verbose: bool = False) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@contextmanager
def user_errors() -> Iterator[None]:
    """Mistakes a user can fix end in one line on stderr, not a traceback."""
    from edgekd.contract import ModelContractError
    from edgekd_train.cards import CardError
    from edgekd_train.data.corpus_base import CorpusError
    from edgekd_train.data.split import SplitError
    from edgekd_train.recipe import RecipeError
    from edgekd_train.tasks import TaskOptionsError

    types: list[type[BaseException]] = [RecipeError, TaskOptionsError, CorpusError, SplitError, FileNotFoundError,
                                        CardError, ModelContractError]
    try:
        from edgekd_train.checkpoints import CheckpointError

        types.append(CheckpointError)
    except ModuleNotFoundError:  # no torch
        pass
    try:
        from edgekd_train.evaluate import EvaluationError
        from edgekd_train.teacher import TeacherError

        types += [TeacherError, EvaluationError]
        from edgekd_train.export import ExportError

        types.append(ExportError)
    except ModuleNotFoundError:
        pass
    try:
        yield
    except tuple(types) as exc:
        print(f"edgekd train: {exc}", file=sys.stderr)
        raise typer.Exit(USER_ERROR) from None
