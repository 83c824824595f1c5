"""Evaluation of a finished run: held-out answers judged, general ability kept, a verdict (issue 15)."""
