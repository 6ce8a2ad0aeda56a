"""`minime distill`: train the student on the teacher's answers."""

from minime.distill.train import DistillReport, distill

__all__ = ["DistillReport", "distill"]
