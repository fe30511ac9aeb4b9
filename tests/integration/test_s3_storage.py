"""S3Storage against a real SeaweedFS server (tests marked ``s3``), plus URL shapes for AWS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest
from botocore.config import Config

from s3server import FaultyProxy, SeaweedS3, free_ports
from tunesmith.config import Settings
from tunesmith.errors import ConfigError, NotFound, StorageError
from tunesmith.storage import S3Storage, create_storage, new_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WAV = b"RIFF" + os.urandom(200_000)
MakeClient = Callable[..., "S3Client"]
FAST_FAIL = {"retries": {"max_attempts": 2, "mode": "standard"}, "read_timeout": 10}


def stored_keys(client: S3Client, bucket: str) -> list[str]:
    return [obj["Key"] for obj in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def assert_bucket_empty(server: SeaweedS3, bucket: str) -> None:
    client = server.client()
    assert stored_keys(client, bucket) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- against SeaweedFS -----------------------------------------------------------------------------


@pytest.mark.s3
def test_round_trip_with_default_client_from_env(s3_env: SeaweedS3, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket)  # boto3 finds the endpoint in AWS_ENDPOINT_URL_S3
    storage.check()
    key = new_key("music-output/", "wav")
    assert not storage.exists(key)

    storage.put(key, WAV, "audio/wav")

    assert storage.exists(key)
    assert storage.client.meta.endpoint_url == s3_env.endpoint_url
    admin = s3_env.client()
    head = admin.head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentType"] == "audio/wav"
    assert head["ContentLength"] == len(WAV)
    assert admin.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == WAV
    assert stored_keys(admin, s3_bucket) == [key]

    storage.delete(key)
    assert not storage.exists(key)
    assert stored_keys(admin, s3_bucket) == []
    storage.delete(key)  # already gone: no error


@pytest.mark.s3
def test_public_url_is_fetchable(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, client=s3_server.client())
    key = new_key("music-output/", "wav")
    storage.put(key, WAV, "audio/wav")

    track = storage.locate(key)

    assert track.key == key
    assert track.s3_url == f"s3://{s3_bucket}/{key}"
    assert track.public_url == f"{s3_server.endpoint_url}/{s3_bucket}/{key}"
    response = httpx.get(track.public_url)  # anonymous: the test server allows public reads
    assert response.status_code == 200
    assert response.content == WAV
    assert response.headers["content-type"] == "audio/wav"


@pytest.mark.s3
def test_presigned_url_is_fetchable_and_really_signed(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = S3Storage(
        s3_bucket, url_mode="presigned", presign_expires=120, client=s3_server.client()
    )
    key = new_key("music-output/", "wav")
    storage.put(key, WAV, "audio/wav")

    track = storage.locate(key)

    assert track.s3_url == f"s3://{s3_bucket}/{key}"
    url = httpx.URL(track.public_url)
    assert str(url.copy_with(query=None)) == f"{s3_server.endpoint_url}/{s3_bucket}/{key}"
    assert url.params["X-Amz-Expires"] == "120"
    assert url.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    response = httpx.get(track.public_url)
    assert response.status_code == 200
    assert response.content == WAV
    # The server checks the signature: a forged one is refused.
    forged = url.copy_set_param("X-Amz-Signature", "0" * 64)
    assert httpx.get(forged).status_code == 403


@pytest.mark.s3
def test_check_missing_bucket_names_it(s3_server: SeaweedS3) -> None:
    storage = S3Storage("no-such-bucket-here", client=s3_server.client())
    with pytest.raises(StorageError, match="does not exist") as info:
        storage.check()
    assert "'no-such-bucket-here'" in info.value.message
    assert s3_server.endpoint_url in info.value.message


@pytest.mark.s3
def test_check_wrong_credentials_is_forbidden(s3_server: SeaweedS3, s3_bucket: str) -> None:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id="tunesmith-test",
        aws_secret_access_key="wrong-secret",
        region_name="us-east-1",
    )
    with pytest.raises(StorageError, match="access denied") as info:
        S3Storage(s3_bucket, client=client).check()
    assert s3_bucket in info.value.message


def test_check_unreachable_endpoint() -> None:
    (port,) = free_ports(1)  # nothing listens there
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint") as info:
        S3Storage("tracks", client=client).check()
    assert f"127.0.0.1:{port}" in info.value.message


@pytest.mark.s3
def test_put_into_missing_bucket_fails_and_creates_nothing(s3_server: SeaweedS3) -> None:
    storage = S3Storage("ts-missing-bucket", client=s3_server.client())
    key = new_key("music-output/", "wav")
    with pytest.raises(StorageError, match="NoSuchBucket") as info:
        storage.put(key, WAV, "audio/wav")
    assert "'ts-missing-bucket'" in info.value.message
    buckets = [b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])]
    assert "ts-missing-bucket" not in buckets


@pytest.mark.s3
def test_corrupted_upload_is_rejected_and_leaves_nothing(
    s3_server: SeaweedS3, s3_bucket: str
) -> None:
    client = s3_server.client()
    corrupted: list[int] = []

    def flip_last_byte(request: object, **kwargs: object) -> None:
        # Runs after Content-MD5 was computed, as damage on the wire would.
        body = request.body  # type: ignore[attr-defined]
        raw = bytearray(body.getvalue() if hasattr(body, "getvalue") else body)
        raw[-1] ^= 0xFF
        request.body = bytes(raw)  # type: ignore[attr-defined]
        corrupted.append(len(raw))

    client.meta.events.register("before-send.s3.PutObject", flip_last_byte)
    storage = S3Storage(s3_bucket, client=client)
    key = new_key("music-output/", "wav")

    with pytest.raises(StorageError, match="BadDigest") as info:
        storage.put(key, WAV, "audio/wav")

    assert corrupted and corrupted[0] == len(WAV)
    assert s3_bucket in info.value.message
    assert not storage.exists(key)
    assert_bucket_empty(s3_server, s3_bucket)


@pytest.fixture
def make_proxy(s3_server: SeaweedS3) -> Iterator[Callable[..., FaultyProxy]]:
    """Build `FaultyProxy` instances in front of the session's server; closed after the test."""
    proxies: list[FaultyProxy] = []

    def make(**kwargs: Any) -> FaultyProxy:
        assert s3_server.s3_port is not None
        proxies.append(FaultyProxy(s3_server.s3_port, **kwargs))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.s3
def test_upload_cut_midway_leaves_nothing(
    s3_server: SeaweedS3, s3_bucket: str, make_proxy: Callable[..., FaultyProxy]
) -> None:
    proxy = make_proxy(cut_request_after=64 * 1024, drop_responses=False)
    storage = S3Storage(s3_bucket, client=s3_server.client(endpoint_url=proxy.url, **FAST_FAIL))
    key = new_key("music-output/", "wav")

    with pytest.raises(StorageError) as info:
        storage.put(key, WAV, "audio/wav")

    assert s3_bucket in info.value.message
    assert f"PUT /{s3_bucket}/{key}".encode() in proxy.forwarded  # the upload did start
    assert not storage.exists(key)  # small requests pass the proxy
    assert_bucket_empty(s3_server, s3_bucket)


@pytest.mark.s3
def test_upload_whose_answer_is_lost_is_removed(
    s3_server: SeaweedS3, s3_bucket: str, make_proxy: Callable[..., FaultyProxy]
) -> None:
    # The server stores the whole object but the client never hears so: put() must not
    # report failure while leaving the object behind.
    proxy = make_proxy(drop_responses=True)
    storage = S3Storage(s3_bucket, client=s3_server.client(endpoint_url=proxy.url, **FAST_FAIL))
    key = new_key("music-output/", "wav")

    with pytest.raises(StorageError, match="ConnectionClosed"):
        storage.put(key, WAV, "audio/wav")

    assert proxy.forwarded.count(f"PUT /{s3_bucket}/{key}".encode()) >= 1
    assert_bucket_empty(s3_server, s3_bucket)


@pytest.mark.s3
def test_get_and_list(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = S3Storage(s3_bucket, client=s3_server.client())
    tracks = [new_key("music-output/", "json") for _ in range(3)]
    for n, key in enumerate(tracks):
        storage.put(key, b"x" * n, "application/json")
    storage.put(new_key("music-output/deeper/", "wav"), WAV, "audio/wav")  # not in the folder
    storage.put(new_key("music-jobs/", "json"), b"{}", "application/json")

    listed = {item.key: item.size for item in storage.list("music-output/")}

    assert listed == {key: n for n, key in enumerate(tracks)}
    assert storage.get(tracks[2]) == b"xx"
    with pytest.raises(NotFound):
        storage.get(new_key("music-output/", "json"))


@pytest.mark.s3
def test_failed_replacing_put_keeps_the_older_object(
    s3_server: SeaweedS3, s3_bucket: str, make_proxy: Callable[..., FaultyProxy]
) -> None:
    # A job record is rewritten as the job goes: a lost answer must not delete the record.
    key = new_key("music-jobs/", "json")
    S3Storage(s3_bucket, client=s3_server.client()).put(key, b"old", "application/json")
    proxy = make_proxy(drop_responses=True)
    storage = S3Storage(s3_bucket, client=s3_server.client(endpoint_url=proxy.url, **FAST_FAIL))

    with pytest.raises(StorageError):
        storage.put(key, b"new", "application/json", replace=True)

    assert s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"new"


# -- URL shapes (no server) ------------------------------------------------------------------------


@pytest.fixture
def aws_client_for(monkeypatch: pytest.MonkeyPatch) -> MakeClient:
    """Build AWS clients offline (no endpoint override), with dummy credentials."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)

    def make(region: str | None, endpoint_url: str | None = None) -> S3Client:
        client: S3Client = boto3.session.Session().client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
        )
        return client

    return make


@pytest.mark.parametrize(
    ("region", "bucket", "expected"),
    [
        ("us-east-1", "tracks", "https://tracks.s3.amazonaws.com/music-output/k.wav"),
        (None, "tracks", "https://tracks.s3.amazonaws.com/music-output/k.wav"),
        ("eu-west-1", "tracks", "https://tracks.s3.eu-west-1.amazonaws.com/music-output/k.wav"),
        (
            "eu-west-1",
            "my.tracks",
            "https://s3.eu-west-1.amazonaws.com/my.tracks/music-output/k.wav",
        ),
        ("us-east-1", "Legacy_Bucket", "https://s3.amazonaws.com/Legacy_Bucket/music-output/k.wav"),
        (
            "cn-north-1",
            "tracks",
            "https://tracks.s3.cn-north-1.amazonaws.com.cn/music-output/k.wav",
        ),
    ],
)
def test_public_url_on_aws(
    aws_client_for: MakeClient, region: str | None, bucket: str, expected: str
) -> None:
    storage = S3Storage(bucket, client=aws_client_for(region))
    track = storage.locate("music-output/k.wav")
    assert track.public_url == expected
    assert track.s3_url == f"s3://{bucket}/music-output/k.wav"


def test_public_url_on_custom_endpoint_is_path_style_and_quoted(aws_client_for: MakeClient) -> None:
    client = aws_client_for("us-east-1", "https://store.example.org:9000/s3/")
    track = S3Storage("tracks", client=client).locate("a b/k+1.wav")
    assert track.public_url == "https://store.example.org:9000/s3/tracks/a%20b/k%2B1.wav"


def test_presigned_url_on_aws_uses_sigv4_and_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default client signs with SigV4 (botocore alone would presign S3 URLs with SigV2,
    # which AWS rejects in newer regions and for KMS-encrypted objects).
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    storage = S3Storage("tracks", url_mode="presigned", presign_expires=900)
    url = httpx.URL(storage.locate("music-output/k.wav").public_url)
    assert url.host == "tracks.s3.eu-west-1.amazonaws.com"
    assert url.path == "/music-output/k.wav"
    assert url.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert url.params["X-Amz-Credential"].startswith("AKIDEXAMPLE/")
    assert "/eu-west-1/s3/aws4_request" in url.params["X-Amz-Credential"]
    assert url.params["X-Amz-Expires"] == "900"
    assert len(url.params["X-Amz-Signature"]) == 64


def test_default_client_follows_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    public = S3Storage("tracks").locate("m/k.wav").public_url
    assert public == "http://127.0.0.1:1/tracks/m/k.wav"
    signed = httpx.URL(S3Storage("tracks", url_mode="presigned").locate("m/k.wav").public_url)
    assert (signed.host, signed.port, signed.path) == ("127.0.0.1", 1, "/tracks/m/k.wav")
    assert signed.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"


def test_invalid_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="bucket"):
        S3Storage("")
    with pytest.raises(ConfigError, match="presigned"):
        S3Storage("tracks", url_mode="signed")  # type: ignore[arg-type]


def test_missing_boto3_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"tunesmith\[aws\]"):
        S3Storage("tracks")


def test_importing_storage_does_not_import_boto3() -> None:
    code = "import sys, tunesmith.storage; print(sorted(m for m in sys.modules if 'boto' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_create_storage_s3() -> None:
    settings = Settings(storage="s3", s3_bucket="tracks", url_mode="presigned", presign_expires=60)
    storage = create_storage(settings)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.url_mode, storage.presign_expires) == (
        "tracks",
        "presigned",
        60,
    )
