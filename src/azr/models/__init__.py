"""Named models (`embedded`, `qwen2.5-coder-0.5b`): where each comes from, how it is installed,
assembled and checked, and where azr caches it. `azr models list|install` drives this package.
"""

from azr.models.errors import ModelInstallError, ModelLoadError
from azr.models.registry import (
    CONVERSION_MARKER,
    EMBEDDED,
    MODELS,
    QWEN_CODER_05B,
    NamedModel,
    cache_dir,
    get_model,
    is_named_model,
)

__all__ = [
    "CONVERSION_MARKER",
    "EMBEDDED",
    "MODELS",
    "QWEN_CODER_05B",
    "ModelInstallError",
    "ModelLoadError",
    "NamedModel",
    "cache_dir",
    "get_model",
    "is_named_model",
]
