"""`minime export`: the trained student as verified GGUF files, a Modelfile and a model card."""

from minime.export.stage import (
    ExportResult,
    VerificationFailed,
    export,
)
from minime.export.stage import verify_export as verify
from minime.export.verify import VerifyReport

__all__ = [
    "ExportResult",
    "VerificationFailed",
    "VerifyReport",
    "export",
    "verify",
]
