"""The arithmetic model of a precision for the error analysis (export/tolerance.py): unit roundoffs after Higham,
*Accuracy and Stability of Numerical Algorithms* (2002), ch. 2-3. Each precision's host record
(export/precisions.py) holds one. The class is the bound engine's (edgerobust/bounds/arithmetic.py), so the golden
tolerance and the certificates of `edgerobust certify` use one model of the same arithmetic."""
from __future__ import annotations

from ..bounds.arithmetic import Arithmetic

__all__ = ["Arithmetic"]
