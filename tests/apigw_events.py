"""API Gateway REST API proxy events, shaped as the documented payload format 1.0.

`proxy_event` builds what a Lambda proxy integration receives for one HTTP request: the
single- and multi-value header maps, the request context with the stage and the API key's
identity, and the body as API Gateway passes it (text, or base64 with ``isBase64Encoded``
when the body is binary to the API).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

__all__ = ["lambda_context", "proxy_event"]


def proxy_event(
    body: Any = None,
    *,
    method: str = "POST",
    resource: str = "/generate",
    base64_body: bool = False,
    headers: dict[str, str] | None = None,
    stage: str = "prod",
) -> dict[str, Any]:
    """One REST proxy event; a dict or list `body` is sent as JSON, bytes or str as they are."""
    if body is None:
        raw: bytes | None = None
    elif isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode("utf-8")
    else:
        raw = json.dumps(body).encode("utf-8")
    if raw is None:
        encoded = None
    elif base64_body:
        encoded = base64.b64encode(raw).decode("ascii")
    else:
        encoded = raw.decode("utf-8")
    sent = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "Host": "abc123defg.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "X-Amzn-Trace-Id": "Root=1-5e66d96f-7491f09xmpl79d18acf3d050",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "x-api-key": "k3y-k3y-k3y",
        **(headers or {}),
    }
    now = time.time()
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": sent,
        "multiValueHeaders": {name: [value] for name, value in sent.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "2gxmpl",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": "JJbxmHEwPHcFvdg=",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{resource}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "abc123defg",
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": "k3y-k3y-k3y",
                "apiKeyId": "abcd1234",
                "sourceIp": "203.0.113.7",
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": "curl/8.5.0",
                "user": None,
            },
            "domainName": "abc123defg.execute-api.us-east-1.amazonaws.com",
            "apiId": "abc123defg",
        },
        "body": encoded,
        "isBase64Encoded": base64_body,
    }


class _Context:
    """The attributes of the Lambda context object the handler may read."""

    def __init__(self, timeout_ms: int = 30_000) -> None:
        self.function_name = "tunesmith-generate"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = (
            "arn:aws:lambda:us-east-1:123456789012:function:tunesmith-generate"
        )
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_context(timeout_ms: int = 30_000) -> Any:
    """A Lambda context object (what the runtime passes as the handler's second argument)."""
    return _Context(timeout_ms)
