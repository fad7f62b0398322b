"""The top of the library, where both paths meet: running them on one split (comparison, run), the
side-by-side report, and recommendations from a OneRec run with a scorer run beside it (recommend)."""
