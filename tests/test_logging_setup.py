"""logging_setup.configure_logging: the console always, a rotating file when LOG_DIR can be written."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import pytest

from logging_setup import configure_logging
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.usefixtures("restore_root_logger")


def test_configure_logging_without_a_writable_log_dir_warns_and_keeps_the_console(
    make_settings: SettingsFactory, tmp_path: Path, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = make_settings(LOG_DIR=str(blocker / "logs"))

    configure_logging(settings)

    root = logging.getLogger()
    assert not any(isinstance(handler, logging.FileHandler) for handler in root.handlers)
    assert any(type(handler) is logging.StreamHandler for handler in root.handlers)
    logging.getLogger("lambda_action.test").info("still on the console")
    err = capsys.readouterr().err
    assert "LOG_DIR" in err
    assert str(blocker / "logs") in err
    assert "still on the console" in err


def test_configure_logging_writes_to_a_file_under_log_dir(make_settings: SettingsFactory, tmp_path: Path, capsys):
    log_dir = tmp_path / "new" / "logs"
    configure_logging(make_settings(LOG_DIR=str(log_dir), LOG_LEVEL="warning"))
    logger = logging.getLogger("lambda_action.test")
    logger.warning("written to the file")
    logger.info("below the level")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (log_dir / "lambda_action.log").read_text()
    assert "written to the file" in text
    assert "below the level" not in text
    assert "written to the file" in capsys.readouterr().err
