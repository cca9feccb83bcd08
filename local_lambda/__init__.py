"""An embedded AWS Lambda runtime: the Lambda REST API on loopback, running Python handlers in warm workers.

    runtime = LocalLambdaRuntime(Path("functions"), port=0)
    await runtime.start()          # runtime.endpoint_url is then what boto3 takes as endpoint_url
    ...
    await runtime.stop()

or, from synchronous code, `with runtime.run_in_thread(): ...`, or as a child process with
`start_runtime_process(Path("functions"), port=0)` (or `python -m local_lambda --port 0` by hand).
"""

from local_lambda.errors import LambdaApiError
from local_lambda.keeper import kept_running
from local_lambda.manifest import ManifestError
from local_lambda.process import RuntimeProcess, start_runtime_process
from local_lambda.publish import publish_version
from local_lambda.registry import FunctionRegistry
from local_lambda.runtime import LambdaRuntime, RuntimeAnswer
from local_lambda.server import LocalLambdaRuntime
from local_lambda.settings import RuntimeSettings, runtime_settings

__all__ = [
    "FunctionRegistry",
    "LambdaApiError",
    "LambdaRuntime",
    "LocalLambdaRuntime",
    "ManifestError",
    "RuntimeAnswer",
    "RuntimeProcess",
    "RuntimeSettings",
    "kept_running",
    "publish_version",
    "runtime_settings",
    "start_runtime_process",
]
