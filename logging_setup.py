"""The process's log handlers: console always, a rotating file under LOG_DIR, syslog when enabled."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from config import Settings

logger = logging.getLogger(__name__)

LOG_FILE_NAME = "lambda_action.log"
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


def configure_logging(settings: Settings, *, level: int | str | None = None) -> None:
    """Console always; a rotating file under LOG_DIR when it can be written; syslog when enabled.

    `level` overrides LOG_LEVEL (the client command line keeps start-up chatter off the console).
    """
    formatter = logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    file_problem = None
    try:
        log_dir = Path(settings.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_dir / LOG_FILE_NAME, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS
            )
        )
    except OSError as error:
        file_problem = error
    if settings.enable_syslog:
        facility = logging.handlers.SysLogHandler.facility_names[settings.syslog_facility]
        handlers.append(
            logging.handlers.SysLogHandler(address=(settings.syslog_host, settings.syslog_port), facility=facility)
        )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(settings.log_level if level is None else level)
    # botocore and urllib3 at DEBUG print request bodies and headers; keep them quieter than the module.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    if file_problem is not None:
        logger.warning(
            "cannot write logs under LOG_DIR=%s (%s); logging to the console only", settings.log_dir, file_problem
        )
