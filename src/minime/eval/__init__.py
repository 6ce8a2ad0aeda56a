"""`minime eval`: how good is the assistant, side by side with the alternatives."""

from minime.eval.contenders import Contender, default_contenders, parse_contender
from minime.eval.runner import EvalReport, evaluate

__all__ = [
    "Contender",
    "EvalReport",
    "default_contenders",
    "evaluate",
    "parse_contender",
]
