"""The SageMaker backend: the training script as a SageMaker training job in the Hugging Face
PyTorch training container, launched with the SageMaker Python SDK 3.x (``ModelTrainer``) and tracked
with the SageMaker and CloudWatch Logs APIs.

Where things go, with ``s3_output = s3://<bucket>/<prefix>`` and ``<name>`` the training job's name::

    s3://<bucket>/<prefix>/<job_id>/input/train/train.parquet            channel "train" (this module)
                                   /input/validation/validation.parquet  channel "validation", when non-empty
                                   /<name>/input/code/                  train.py + requirements.txt (the SDK)
                                   /<name>/input/sm_drivers/            the SDK's container driver scripts
                                   /<name>/output/model.tar.gz          SM_MODEL_DIR: adapter/, merged/, metrics.json
                                   /<name>/output/output.tar.gz         SM_OUTPUT_DATA_DIR (metrics.json)

``<name>`` is ``<job_id>-<yyyymmddHHMMSS>``: ``ModelTrainer`` always appends its own timestamp to the
``base_job_name`` (``sagemaker.train.utils._get_unique_name``), so the SageMaker name is the job id plus
a suffix. The registry keeps it (``config["sagemaker"]["training_job_name"]``, and the ARN in
``external_id``), and every command finds the job by it.

The job runs ``train.py`` with the hyperparameters of :meth:`JobConfig.hyperparameters` as
``--key value`` flags (the base model alias is replaced by its Hugging Face Hub id,
:data:`finetune.basemodel.HUB_IDS`), on ``settings.instance_count`` × ``instance_type``, optionally on
managed spot capacity, under SageMaker's stopping condition. The image is ``settings.image_uri`` or
the Hugging Face training image for ``transformers_version``/``pytorch_version``/``py_version`` from the
SDK's image URI table (``sagemaker.core.image_uris.retrieve``; offline, GPU instance types only).

Status tracking maps ``DescribeTrainingJob``'s ``TrainingJobStatus`` one to one to the registry's
statuses (the registry uses SageMaker's names). AWS API references:
CreateTrainingJob, DescribeTrainingJob, StopTrainingJob
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_<Operation>.html) and CloudWatch Logs
DescribeLogStreams / GetLogEvents (log group ``/aws/sagemaker/TrainingJobs``, one stream per instance
named ``<name>/algo-<n>-<epoch seconds>``).

Notes:

* Credentials come from boto3's default chain, or from the ``boto_session`` given. The SDK validates
  the execution role with ``iam:SimulatePrincipalPolicy`` unless ``SAGEMAKER_VALIDATE_ROLE=false``
  (needed against moto, which lacks that call); ``role_arn`` must be a full role ARN.
* The SDK's telemetry (an HTTPS GET to an AWS bucket per ``train`` call) is opted out, and the SDK is
  given an explicit configuration, so local SageMaker config files (intelligent defaults) do not apply.
* ``endpoint_url`` sends every client the backend and the SDK create (S3, SageMaker, IAM, STS, Logs)
  to one endpoint, e.g. a moto server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from finetune.basemodel import HUB_IDS
from finetune.errors import JobError
from finetune.jobs import registry
from finetune.jobs.config import JobConfig, SageMakerSettings
from finetune.jobs.launch import ENTRYPOINT, split_file
from finetune.jobs.registry import TERMINAL, JobRecord

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
"""CloudWatch Logs group of SageMaker training jobs; streams are ``<job name>/algo-<n>-<epoch s>``."""

CHANNELS = ("train", "validation")
"""Dataset splits uploaded as channels (``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``); the test
split stays local for evaluation."""

METRIC_DEFINITIONS = {
    "train_loss": r'"train_loss": ([-+0-9.eE]+)',
    "steps_per_s": r'"steps_per_s": ([-+0-9.eE]+)',
}
"""Regexes SageMaker applies to the script's output (its final JSON line); the values appear in
``DescribeTrainingJob.FinalMetricDataList`` and so in the registry's metrics."""

SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
"""The SageMaker SDK configuration the backend uses instead of local config files: telemetry off."""

S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$")


class EndpointSession(boto3.session.Session):
    """A boto3 session whose clients and resources all use ``endpoint_url`` unless given another.

    The SageMaker SDK creates its clients from the session it is given (``session.client("sagemaker",
    region)``, ``session.client("s3")`` ...) without an endpoint argument, so this is how one endpoint
    (a moto server, a VPC endpoint proxy) reaches every client without touching the environment."""

    def __init__(self, endpoint_url: str, **kwargs):
        super().__init__(**kwargs)
        self.endpoint_url = endpoint_url

    def client(self, *args, **kwargs):
        if kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_url
        return super().client(*args, **kwargs)

    def resource(self, *args, **kwargs):
        if kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_url
        return super().resource(*args, **kwargs)


def boto_session_for(settings: SageMakerSettings) -> boto3.session.Session:
    """A boto3 session in ``settings.region``, on ``settings.endpoint_url`` when set."""
    if settings.endpoint_url:
        return EndpointSession(settings.endpoint_url, region_name=settings.region)
    return boto3.session.Session(region_name=settings.region)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` → ``(bucket, prefix)`` (prefix without leading/trailing ``/``, may be
    empty). Raises JobError on anything else."""
    match = S3_URI.match(uri or "")
    if not match:
        raise JobError(f"not an S3 location (s3://bucket[/prefix]): {uri!r}")
    return match.group(1), (match.group(2) or "").strip("/")


def _error_text(exc: BaseException) -> str:
    """A one-line description of an AWS error: the error code and message (an HTML error page, as a
    server that does not implement an operation returns, becomes its HTTP status)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code, message = error.get("Code", "?"), (error.get("Message") or "").strip()
        if message.startswith("<") or not message:
            return f"HTTP {status} ({code})"
        return f"{code}: {message.splitlines()[0][:300]}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


@contextmanager
def _aws(action: str):
    """Turn AWS client errors (botocore, boto3 transfers) inside the block into JobError."""
    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise JobError(f"{action} failed: {_error_text(exc)}") from exc


def resolve_image(settings: SageMakerSettings, region: str | None = None) -> str:
    """The training image URI: ``settings.image_uri``, or the Hugging Face PyTorch training image of
    ``transformers_version``/``pytorch_version``/``py_version`` for ``instance_type`` in ``region``
    (default ``settings.region``), from the SDK's bundled URI table (no AWS call).
    Raises JobError for a combination the table lacks (e.g. a CPU instance type)."""
    if settings.image_uri:
        return settings.image_uri
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(framework="huggingface", region=region or settings.region,
                                   version=settings.transformers_version,
                                   base_framework_version=f"pytorch{settings.pytorch_version}",
                                   py_version=settings.py_version, instance_type=settings.instance_type,
                                   image_scope="training")
    except ValueError as exc:
        raise JobError(f"no Hugging Face training image for transformers {settings.transformers_version}, "
                       f"pytorch {settings.pytorch_version}, {settings.py_version} on {settings.instance_type} "
                       f"in {region or settings.region}: {exc} (or set FLYWHEEL_SAGEMAKER_IMAGE_URI)") from exc


def training_job_name(rec: JobRecord) -> str | None:
    """The SageMaker training job name of ``rec`` (None before one was created): the recorded name, or
    the last part of the training job ARN in ``external_id``."""
    name = (rec.config.get("sagemaker") or {}).get("training_job_name")
    if name:
        return name
    if rec.external_id and ":training-job/" in rec.external_id:
        return rec.external_id.split(":training-job/", 1)[1]
    return None


def status_of(description: dict[str, Any]) -> tuple[str, str | None, dict[str, Any], dict[str, str]]:
    """``DescribeTrainingJob``'s response → (status, message, metrics, artifacts).

    status: ``TrainingJobStatus`` (InProgress, Completed, Failed, Stopping, Stopped: the registry's
    names). message: ``FailureReason`` when present; for Stopped with a ``SecondaryStatus`` other than
    Stopped (MaxRuntimeExceeded, MaxWaitTimeExceeded) that status. metrics: ``training_time_s``
    (``TrainingTimeInSeconds``), ``billable_time_s`` (``BillableTimeInSeconds``, less than the
    training time with spot), and each ``FinalMetricDataList`` entry as name → value. artifacts:
    ``model_tar`` (``ModelArtifacts.S3ModelArtifacts``) and ``output_tar`` once Completed."""
    status = description["TrainingJobStatus"]
    message = description.get("FailureReason")
    secondary = description.get("SecondaryStatus")
    if message is None and status == "Stopped" and secondary and secondary != "Stopped":
        message = secondary
    metrics: dict[str, Any] = {}
    if description.get("TrainingTimeInSeconds") is not None:
        metrics["training_time_s"] = description["TrainingTimeInSeconds"]
    if description.get("BillableTimeInSeconds") is not None:
        metrics["billable_time_s"] = description["BillableTimeInSeconds"]
    for item in description.get("FinalMetricDataList") or []:
        metrics[item["MetricName"]] = item["Value"]
    artifacts: dict[str, str] = {}
    if status == "Completed":
        model = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if model:
            artifacts["model_tar"] = model
        output_path = (description.get("OutputDataConfig") or {}).get("S3OutputPath")
        if output_path:
            artifacts["output_tar"] = f"{output_path.rstrip('/')}/{description['TrainingJobName']}/output/output.tar.gz"
    return status, message, metrics, artifacts


class SageMakerBackend:
    """Runs jobs as SageMaker training jobs (see the module doc).

    ``settings`` must name ``role_arn`` (a full IAM role ARN SageMaker assumes) and ``s3_output``
    (``s3://bucket[/prefix]``, the bucket must exist). ``boto_session`` replaces the one made from
    ``settings`` (region, endpoint_url). ``poll_s`` is the seconds between DescribeTrainingJob calls
    when waiting. Every AWS error surfaces as :class:`JobError`."""

    name = "sagemaker"

    def __init__(self, catalog: Catalog, settings: SageMakerSettings, lake: LakeSettings | None = None,
                 boto_session: boto3.session.Session | None = None, poll_s: float = 30.0):
        self.catalog, self.settings, self.lake, self.poll_s = catalog, settings, lake, poll_s
        self.boto_session = boto_session or boto_session_for(settings)
        self._clients: dict[str, Any] = {}

    def client(self, service: str, region: str | None = None):
        """The backend's boto3 client for ``service`` (``sagemaker``, ``s3``, ``logs``) in ``region``
        (default: the session's), made once."""
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.boto_session.client(service, region_name=region) if region \
                else self.boto_session.client(service)
        return self._clients[key]

    def _job_client(self, service: str, rec: JobRecord):
        """A client in the region the job was launched in (recorded, or from its ARN)."""
        region = (rec.config.get("sagemaker") or {}).get("region")
        if not region and rec.external_id and rec.external_id.count(":") >= 5:
            region = rec.external_id.split(":")[3]
        return self.client(service, region if region and region != self.boto_session.region_name else None)

    # -- launch ----------------------------------------------------------------------------------

    def launch(self, rec: JobRecord, dataset_dir: Path, wait: bool = False) -> JobRecord:
        """Upload the dataset's train/validation splits, create the training job, record it
        ``InProgress`` (``external_id`` = TrainingJobArn; artifacts ``s3_prefix``, ``train``,
        ``validation``, ``code``, ``output``); with ``wait``, poll until the job ends and return its
        terminal row. A launch that fails is recorded ``Failed`` with the reason, then JobError raised."""
        try:
            started = self._start(rec, dataset_dir)
        except Exception as exc:  # recorded whatever it is; AWS and SDK errors are JobErrors already
            reason = str(exc) if isinstance(exc, JobError) else _error_text(exc)
            registry.record(self.catalog, rec.with_status("Failed", f"launch failed: {reason}"), self.lake)
            raise
        rec = registry.record(self.catalog, started, self.lake)
        return self.wait(rec) if wait else rec

    def _start(self, rec: JobRecord, dataset_dir: Path) -> JobRecord:
        settings = self.settings
        if not settings.role_arn or not settings.role_arn.startswith("arn:"):
            raise JobError("SageMaker needs an execution role ARN (FLYWHEEL_SAGEMAKER_ROLE_ARN, "
                           "arn:aws:iam::<account>:role/<name>)")
        if not settings.s3_output:
            raise JobError("SageMaker needs an S3 output location (FLYWHEEL_SAGEMAKER_S3_OUTPUT, s3://bucket/prefix)")
        if settings.use_spot and settings.max_wait_s is not None and settings.max_wait_s < settings.max_runtime_s:
            raise JobError(f"max_wait_s ({settings.max_wait_s}) must be at least "
                           f"max_runtime_s ({settings.max_runtime_s})")
        bucket, prefix = parse_s3_uri(settings.s3_output)
        job_prefix = f"{prefix}/{rec.job_id}" if prefix else rec.job_id
        config = JobConfig(**{k: v for k, v in rec.config.items() if k in JobConfig.model_fields})
        region = self.boto_session.region_name or settings.region
        image = resolve_image(settings, region)
        hyperparameters = config.hyperparameters(HUB_IDS.get(config.base_model, config.base_model))
        channels = self._upload_channels(dataset_dir, bucket, job_prefix)
        output_path = f"s3://{bucket}/{job_prefix}"
        job = self._create_training_job(rec.job_id, image, hyperparameters, channels, output_path,
                                        bucket, prefix)
        name = job.training_job_name
        code = {c.channel_name: c.data_source.s3_data_source.s3_uri for c in job.input_data_config or []
                if getattr(getattr(c, "data_source", None), "s3_data_source", None)}.get("code")
        max_wait = self._max_wait()
        used = {"training_job_name": name, "image_uri": image, "region": region, "role_arn": settings.role_arn,
                "s3_output": settings.s3_output, "instance_type": settings.instance_type,
                "instance_count": settings.instance_count, "volume_size_gb": settings.volume_size_gb,
                "use_spot": settings.use_spot, "max_runtime_s": settings.max_runtime_s, "max_wait_s": max_wait,
                "hyperparameters": hyperparameters}
        artifacts = {"s3_prefix": f"s3://{bucket}/{job_prefix}/", **channels, "output": f"{output_path}/{name}/output/"}
        if code:
            artifacts["code"] = code
        return rec.with_status("InProgress", None, external_id=job.training_job_arn, artifacts=artifacts,
                               config={**rec.config, "sagemaker": {**(rec.config.get("sagemaker") or {}), **used}})

    def _max_wait(self) -> int | None:
        """MaxWaitTimeInSeconds: only with spot; ``max_wait_s`` or twice ``max_runtime_s``."""
        if not self.settings.use_spot:
            return None
        return self.settings.max_wait_s or 2 * self.settings.max_runtime_s

    def _upload_channels(self, dataset_dir: Path, bucket: str, job_prefix: str) -> dict[str, str]:
        """Upload the dataset version's ``data/<split>.parquet`` to ``<job_prefix>/input/<split>/``; return
        channel → S3 prefix URI. An empty or missing validation split is left out; an empty or missing
        train split raises JobError."""
        channels = {}
        s3 = self.client("s3")
        for split in CHANNELS:
            source = split_file(Path(dataset_dir), split)
            if source is None:
                if split == "train":
                    raise JobError(f"no training rows in {Path(dataset_dir) / 'data' / 'train.parquet'}")
                continue
            key = f"{job_prefix}/input/{split}/{split}.parquet"
            with _aws(f"uploading the {split} split to s3://{bucket}/{key}"):
                s3.upload_file(str(source), bucket, key)
            channels[split] = f"s3://{bucket}/{job_prefix}/input/{split}/"
        return channels

    def _create_training_job(self, job_id: str, image: str, hyperparameters: dict[str, str],
                             channels: dict[str, str], output_path: str, bucket: str, prefix: str):
        """CreateTrainingJob through ``ModelTrainer`` (it uploads ``finetune/entrypoint`` and its
        drivers under ``<output_path>/<name>/input/``); returns the SDK's ``TrainingJob`` resource."""
        from sagemaker.core.helper.iam_role_resolver import RoleValidationError
        from sagemaker.core.helper.session_helper import Session
        from sagemaker.core.training.configs import (Compute, InputData, MetricDefinition, OutputDataConfig,
                                                     SourceCode, StoppingCondition)
        from sagemaker.train import ModelTrainer

        settings = self.settings
        try:
            session = Session(boto_session=self.boto_session, default_bucket=bucket,
                              default_bucket_prefix=prefix or None, sagemaker_config=SDK_CONFIG)
            trainer = ModelTrainer(
                sagemaker_session=session, role=settings.role_arn, base_job_name=job_id, training_image=image,
                source_code=SourceCode(source_dir=str(ENTRYPOINT), entry_script="train.py",
                                       requirements="requirements.txt",
                                       ignore_patterns=["__pycache__", "*.pyc", ".*"]),
                compute=Compute(instance_type=settings.instance_type, instance_count=settings.instance_count,
                                volume_size_in_gb=settings.volume_size_gb,
                                enable_managed_spot_training=settings.use_spot),
                stopping_condition=StoppingCondition(max_runtime_in_seconds=settings.max_runtime_s,
                                                     max_wait_time_in_seconds=self._max_wait()),
                output_data_config=OutputDataConfig(s3_output_path=output_path),
                hyperparameters=hyperparameters)
            trainer.with_metric_definitions([MetricDefinition(name=n, regex=r) for n, r in METRIC_DEFINITIONS.items()])
            trainer.train(input_data_config=[InputData(channel_name=c, data_source=uri) for c, uri in channels.items()],
                          wait=False, logs=False)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise JobError(f"CreateTrainingJob for {job_id} failed: {_error_text(exc)}") from exc
        except (ValueError, RoleValidationError) as exc:  # the SDK's validation (pydantic errors are ValueErrors)
            raise JobError(f"the SageMaker SDK refused the training job {job_id}: {_error_text(exc)}") from exc
        return trainer._latest_training_job  # the resource train() created (the SDK documents this attribute)

    # -- tracking --------------------------------------------------------------------------------

    def describe(self, rec: JobRecord) -> dict[str, Any]:
        """DescribeTrainingJob's response for the job's training job. Raises JobError (also when the
        job has none)."""
        name = training_job_name(rec)
        if name is None:
            raise JobError(f"{rec.job_id} has no SageMaker training job (status {rec.status})")
        with _aws(f"DescribeTrainingJob {name}"):
            return self._job_client("sagemaker", rec).describe_training_job(TrainingJobName=name)

    def refresh(self, rec: JobRecord) -> JobRecord:
        """Ask SageMaker for the job's status; record a row when it differs from the registry's
        (metrics and artifacts merged in, see :func:`status_of`); return the latest row. A job already
        terminal in the registry, or never created on SageMaker, is returned as is. Raises JobError."""
        latest = registry.latest(self.catalog, rec.job_id, self.lake)
        name = training_job_name(latest)
        if latest.status in TERMINAL or name is None:
            return latest
        status, message, metrics, artifacts = status_of(self.describe(latest))
        if status == latest.status:
            return latest
        return registry.record(self.catalog, latest.with_status(
            status, message, metrics={**latest.metrics, **metrics}, artifacts={**latest.artifacts, **artifacts}),
            self.lake)

    def wait(self, rec: JobRecord) -> JobRecord:
        """Refresh every ``poll_s`` seconds until the job is Completed, Failed or Stopped; return that row.
        (SageMaker's stopping condition bounds the wait.) Raises JobError."""
        latest = self.refresh(rec)
        while latest.status not in TERMINAL:
            time.sleep(self.poll_s)
            latest = self.refresh(latest)
        return latest

    def stop(self, rec: JobRecord) -> JobRecord:
        """StopTrainingJob, then record ``Stopping`` (SageMaker stops the container with SIGTERM, uploads
        the model dir, and the job ends ``Stopped``; a later refresh records that). Raises JobError when
        the job already ended, was never created, or the endpoint refuses the request (nothing is
        recorded then)."""
        latest = self.refresh(rec)
        if latest.status in TERMINAL:
            raise JobError(f"{rec.job_id} already ended ({latest.status})")
        name = training_job_name(latest)
        if name is None:
            raise JobError(f"{rec.job_id} has no SageMaker training job (status {latest.status})")
        with _aws(f"StopTrainingJob {name}"):
            self._job_client("sagemaker", latest).stop_training_job(TrainingJobName=name)
        if latest.status == "Stopping":
            return latest
        return registry.record(self.catalog, latest.with_status("Stopping", "stop requested"), self.lake)

    def logs(self, rec: JobRecord) -> Iterator[str]:
        """The job's CloudWatch log lines so far, oldest first, stream after stream (``[algo-<n>]``
        prefixed when the job has several instances). Nothing when the job was never created or has
        no stream yet (no log group either). Raises JobError on other AWS errors."""
        latest = registry.latest(self.catalog, rec.job_id, self.lake)
        name = training_job_name(latest)
        if name is None:
            return
        logs = self._job_client("logs", latest)
        streams: list[str] = []
        try:
            with _aws(f"DescribeLogStreams {LOG_GROUP} {name}/"):
                for page in logs.get_paginator("describe_log_streams").paginate(
                        logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/"):
                    streams += [s["logStreamName"] for s in page.get("logStreams", [])]
        except JobError as exc:
            if isinstance(exc.__cause__, ClientError) and \
                    exc.__cause__.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return
            raise
        for stream in sorted(streams):
            host = stream[len(name) + 1:].rsplit("-", 1)[0]
            token = None
            while True:
                kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if token:
                    kwargs["nextToken"] = token
                with _aws(f"GetLogEvents {LOG_GROUP} {stream}"):
                    page = logs.get_log_events(**kwargs)
                for event in page.get("events", []):
                    yield f"[{host}] {event['message']}" if len(streams) > 1 else event["message"]
                if not page.get("events") or page.get("nextForwardToken") in (None, token):
                    break
                token = page["nextForwardToken"]
