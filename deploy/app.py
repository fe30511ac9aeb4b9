#!/usr/bin/env python3
"""The CDK app: ``cdk deploy -c variant=serverless|realtime|async|lambda`` (see README)."""

from __future__ import annotations

import sys

from aws_cdk import App

from tunesmith_deploy.stack import build_app


def main() -> None:
    app = App()
    try:
        build_app(app)
    except ValueError as exc:  # a bad -c value: one line, no traceback
        sys.exit(f"tunesmith deploy: {exc}")
    try:
        app.synth()
    except RuntimeError as exc:  # cdk-nag findings: printed above, plus where the report is
        if "ValidationFailed" not in str(exc):
            raise
        sys.exit(f"tunesmith deploy: {exc}".splitlines()[0])


if __name__ == "__main__":
    main()
