"""The plain boto3 Lambda client that direct calls and the minimal gateway share."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def plain_lambda_client(endpoint_url: str, connections: int) -> Any:
    """boto3's Lambda client with its defaults, but one attempt per call and a connection for every thread."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=connections),
    )
