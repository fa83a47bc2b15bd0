"""Runs an unchanged AWS Lambda Python handler as a Sluice component (world `handler` in
wit/sluice.wit), the way awslambdaric runs it on Lambda.

`sluice build` fills in the two placeholders below and runs componentize-py on this module.
componentize-py imports it at build time and snapshots the initialised interpreter, so the
handler's module is imported once, at build, and an import error fails the build.
"""

import _strptime  # noqa: F401 (see below)
import encodings
import importlib
import json
import pkgutil
import sys
import time
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

# Only the modules imported at build time are in the component: it cannot read the standard
# library's files when it runs (bytecodealliance/componentize-py#91). The handler's own
# imports must therefore be at module level. These are the ones the standard library makes
# lazily, out of the handler's hands: codecs looked up by name ("idna", "cp1252", ...) and
# _strptime for datetime.strptime.
for _codec in pkgutil.iter_modules(encodings.__path__, "encodings."):
    try:
        importlib.import_module(_codec.name)
    except ImportError:
        pass  # codecs of Windows (mbcs, oem) or of modules WASI lacks (bz2)

_MODULE = "__SLUICE_HANDLER_MODULE__"
_FUNCTION = "__SLUICE_HANDLER_FUNCTION__"

_handler = getattr(importlib.import_module(_MODULE), _FUNCTION, None)
if not callable(_handler):
    # Lambda's Runtime.HandlerNotFound, but at build time rather than on the first event.
    raise AttributeError(f"Handler '{_FUNCTION}' missing on module '{_MODULE}'")


class LambdaContext:
    """awslambdaric's context object, filled from the invocation's context record instead of
    the environment and the Runtime API's headers."""

    def __init__(self, ctx):
        self.aws_request_id = ctx.request_id
        self.function_name = ctx.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = ctx.invoked_function_arn
        # A str: awslambdaric reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
        self.memory_limit_in_mb = str(ctx.memory_limit_mb)
        self.log_group_name = f"/aws/lambda/{ctx.function_name}"
        self.log_stream_name = f"sluice/{ctx.function_name}"
        self.identity = None
        self.client_context = None
        self._deadline_ms = ctx.deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, msg):
        sys.stdout.write(str(msg))


def _error(kind, error_type, message, stack_trace=()):
    return Err(types.Error(kind, error_type, message, list(stack_trace)))


class WitWorld(wit_world.WitWorld):
    def handle(self, event, context):
        try:
            payload = json.loads(event)
        except ValueError as e:
            raise _error(types.ErrorKind.HANDLER, "Runtime.UnmarshalError",
                         f"Unable to unmarshal input: {e}")
        try:
            result = _handler(payload, LambdaContext(context))
        except Exception as e:
            kind = types.ErrorKind.MEMORY if isinstance(e, MemoryError) else types.ErrorKind.HANDLER
            # Start below this adapter's own frame, as awslambdaric leaves out its frames; one
            # frame a line, without format_list's line ends.
            frames = traceback.format_list(traceback.extract_tb(e.__traceback__.tb_next))
            raise _error(kind, type(e).__name__, str(e), [f.rstrip() for f in frames])
        try:
            # NaN and Infinity are refused: the answer must be JSON.
            return json.dumps(result, ensure_ascii=False, allow_nan=False)
        except Exception as e:
            raise _error(types.ErrorKind.INVALID_RESPONSE, "Runtime.MarshalError",
                         f"Unable to marshal response: {e}")
