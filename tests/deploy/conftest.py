"""Fixtures of the deploy tests (tests/cdk_synth.py).

synths     session  run name -> Synth: every `cdk synth` run (and app.py alone), in parallel
sts        session  the StsStandin the CLI asks for the account (127.0.0.1)
net_guard  session  the node preload that refuses and logs any non-loopback destination
"""

from cdk_synth import net_guard, sts, synths  # noqa: F401
