"""The services both front doors answer, by the names that label their calls in the metrics and logs.

These are the gRPC services' full names; the HTTP routes of the same calls use them too, so that a
call counts alike whichever protocol carried it.
"""
from __future__ import annotations

DIGITS_SERVICE = "digits.v1.DigitClassifier"
INFERENCE_SERVICE = "inference.GRPCInferenceService"
