"""Where tracks go: one S3 bucket, TLS only, with the track prefix public or private.

``url_mode=public`` (the design's default) lets anyone read objects under the track prefix
and nothing else: ACLs stay blocked (``BLOCK_ACLS_ONLY``) and one bucket-policy statement
grants ``s3:GetObject`` on ``<prefix>*``. ``url_mode=presigned`` blocks all public access and
the API answers with presigned URLs instead. Server access logs go to a second, private
bucket; an optional lifecycle rule expires tracks after ``expire_days``. The async variant's
forms (requests with uploads) wait under ``music-inputs/``, private, for a day at most:
SageMaker reads each within hours (6 h in its queue at most, 1 h processing).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from tunesmith.aws.deployment import INPUT_PREFIX
from tunesmith_deploy.config import DeployConfig
from tunesmith_deploy.nag import acknowledge

__all__ = ["FAILURE_PREFIX", "TrackBucket"]

FAILURE_PREFIX = "music-failures/"  # the async endpoint's error documents: never public


class TrackBucket(Construct):
    """The track bucket (`bucket`) and its access-log bucket (`logs`)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        self.prefix = config.prefix
        removal = RemovalPolicy.RETAIN if config.retain_bucket else RemovalPolicy.DESTROY
        self.logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="ExpireLogs", expiration=Duration.days(90))],
            removal_policy=removal,
            auto_delete_objects=not config.retain_bucket,
        )

        public = config.url_mode == "public"
        rules = [
            s3.LifecycleRule(
                id="AbortIncompleteUploads",
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ]
        if config.variant == "async":
            rules.append(
                s3.LifecycleRule(
                    id="ExpireInputs", prefix=INPUT_PREFIX, expiration=Duration.days(1)
                )
            )
        if config.expire_days:
            rules.append(
                s3.LifecycleRule(
                    id="ExpireTracks",
                    prefix=config.prefix,
                    expiration=Duration.days(config.expire_days),
                )
            )
        self.bucket = s3.Bucket(
            self,
            "Tracks",
            block_public_access=(
                s3.BlockPublicAccess.BLOCK_ACLS_ONLY if public else s3.BlockPublicAccess.BLOCK_ALL
            ),
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.logs,
            server_access_logs_prefix="tracks/",
            lifecycle_rules=rules,
            removal_policy=removal,
            auto_delete_objects=not config.retain_bucket,
        )
        if public:
            self.bucket.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="PublicReadOfTracks",
                    actions=["s3:GetObject"],
                    principals=[iam.AnyPrincipal()],
                    resources=[self.bucket.arn_for_objects(f"{config.prefix}*")],
                )
            )
            acknowledge(
                self.bucket,
                "S2",
                f"Public reads of the {config.prefix} prefix (and nothing else) are the "
                "design's public URL mode: ACLs stay blocked and one bucket-policy statement "
                "grants s3:GetObject there. Deploy with -c url_mode=presigned to block all "
                "public access.",
            )
