"""Resource globs: does a pattern match a string, and does one pattern cover another?

The matcher lives in the verifier SDK (``taskwarden_verifier.globs``, where its semantics are
documented) because tool owners' verifiers match the same patterns the policy engine grants:
one implementation, so a scope means the same thing on both sides. Called by policy evaluation
(`glob_covers`) and delegation narrowing. Pure.
"""

from __future__ import annotations

from taskwarden_verifier.globs import glob_covers, glob_match

__all__ = ["glob_covers", "glob_match"]
