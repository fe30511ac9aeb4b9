"""Fixtures of the deploy tests (tests/cdk_synth.py).

synths  session  scenario name -> Synth: the app synthesized once per scenario, in parallel
"""

from cdk_synth import synths  # noqa: F401
