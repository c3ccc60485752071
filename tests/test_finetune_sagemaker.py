"""The SageMaker backend against a moto server (a real HTTP endpoint for S3, SageMaker, IAM, STS and
CloudWatch Logs, run in-process so the test can move jobs between states): a DPO job on a real
curated preference dataset is launched through the SageMaker SDK's ModelTrainer, the exact
CreateTrainingJob request is checked, and jobs are tracked to Completed, Failed and Stopped."""

import json
import threading
import time
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from typer.testing import CliRunner

from feedback.cli import app
from tests.datasets import build_version, point_at_lake
from finetune.errors import JobError
from finetune.jobs import registry
from finetune.jobs.config import JobConfig, SageMakerSettings
from finetune.jobs.launch import ENTRYPOINT, launch
from finetune.jobs.sagemaker import LOG_GROUP, SageMakerBackend, resolve_image, training_job_name

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/flywheel-sagemaker"
BUCKET = "flywheel-ml"
S3_OUTPUT = f"s3://{BUCKET}/finetune"
HF_IMAGE = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
            "2.8.0-transformers4.56.2-gpu-py312-cu129-ubuntu22.04")


@pytest.fixture(scope="module")
def moto_url():
    """A moto server on a free port, with fake credentials and the SDK's role check off."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                           "AWS_ENDPOINT_URL": url, "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(key, raising=False)
        import boto3

        boto3.client("s3", endpoint_url=url, region_name=REGION).create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


@pytest.fixture(scope="module")
def dataset(lake, tmp_path_factory):
    """A real preference dataset version (tulu human-eval pairs) built with `flywheel dataset build`."""
    stack, _ = lake
    tmp = tmp_path_factory.mktemp("sm-dataset")
    catalog = stack.catalog()
    with pytest.MonkeyPatch.context() as mp:
        point_at_lake(mp, stack.home, tmp)
        row = build_version(catalog, tmp, "sm-pref", "preference")
    return catalog, stack.lake, row


def moto_job(name):
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]


def settings(url, **kw):
    return SageMakerSettings(role_arn=ROLE, s3_output=S3_OUTPUT, region=REGION, endpoint_url=url, **kw)


def backend_with_capture(catalog, lake, cfg):
    """A backend whose CreateTrainingJob requests are captured exactly as botocore sends them."""
    backend = SageMakerBackend(catalog, cfg, lake=lake, poll_s=0.05)
    requests = []
    backend.boto_session.events.register("provide-client-params.sagemaker.CreateTrainingJob",
                                         lambda params, **_: requests.append(json.loads(json.dumps(params))))
    return backend, requests


def statuses(catalog, lake, job_id):
    return [r.status for r in registry.history(catalog, job_id, lake)]


def test_dpo_job_request_uploads_and_tracking_to_completed(moto_url, dataset):
    catalog, lake, version = dataset
    cfg = settings(moto_url, use_spot=True, max_runtime_s=3600, max_wait_s=7200, instance_type="ml.g5.2xlarge")
    backend, requests = backend_with_capture(catalog, lake, cfg)
    config = JobConfig(method="dpo", lora_r=8, max_steps=50)
    rec = launch(catalog, backend, version["version"], config, lake=lake)
    assert rec.status == "InProgress"
    name = training_job_name(rec)
    assert name.startswith(rec.job_id + "-") and len(name) <= 63  # ModelTrainer appends its timestamp
    assert rec.external_id == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"

    # the exact CreateTrainingJob request
    assert len(requests) == 1
    req = requests[0]
    assert req["TrainingJobName"] == name
    assert req["RoleArn"] == ROLE
    image = resolve_image(cfg)
    assert image == HF_IMAGE
    assert req["AlgorithmSpecification"]["TrainingImage"] == image
    assert req["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert {m["Name"] for m in req["AlgorithmSpecification"]["MetricDefinitions"]} == {"train_loss", "steps_per_s"}
    assert req["HyperParameters"] == {
        "method": "dpo", "model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "epochs": "1.0",
        "max_steps": "50", "learning_rate": "5e-05", "per_device_train_batch_size": "4",
        "gradient_accumulation_steps": "1", "max_length": "512", "lora_r": "8", "lora_alpha": "32",
        "lora_dropout": "0.05", "beta": "0.1", "seed": "42"}
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert req["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    job_prefix = f"finetune/{rec.job_id}"
    assert req["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/{job_prefix}"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]}
    assert channels["train"] == f"s3://{BUCKET}/{job_prefix}/input/train/"
    assert channels["validation"] == f"s3://{BUCKET}/{job_prefix}/input/validation/"
    assert channels["code"] == f"s3://{BUCKET}/{job_prefix}/{name}/input/code"
    assert set(channels) == {"train", "validation", "code", "sm_drivers"}

    # the channels hold the dataset's Parquet splits byte for byte, the code channel our entry point
    s3 = backend.client("s3")
    data = Path(version["path"]) / "data"
    for split in ("train", "validation"):
        prefix = channels[split].split(f"s3://{BUCKET}/", 1)[1]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
        assert keys == [f"{prefix}{split}.parquet"]
        body = s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
        expected = (data / f"{split}.parquet").read_bytes()
        assert body == expected and body
    code_prefix = channels["code"].split(f"s3://{BUCKET}/", 1)[1] + "/"
    code = {o["Key"][len(code_prefix):]: o for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=code_prefix)["Contents"]}
    assert set(code) == {"train.py", "requirements.txt"}
    uploaded = s3.get_object(Bucket=BUCKET, Key=code_prefix + "train.py")["Body"].read()
    assert uploaded == (ENTRYPOINT / "train.py").read_bytes()
    assert rec.artifacts["train"] == channels["train"] and rec.artifacts["code"] == channels["code"]
    assert rec.config["sagemaker"]["image_uri"] == image and rec.config["sagemaker"]["use_spot"] is True

    # tracked to Completed (moto completes jobs at once), with SageMaker's times and final metrics
    job = moto_job(name)
    job.training_time_in_seconds, job.billable_time_in_seconds = 1234, 411
    done = backend.refresh(rec)
    assert done.status == "Completed" and done.message is None
    assert done.metrics["training_time_s"] == 1234 and done.metrics["billable_time_s"] == 411
    assert done.metrics["train:progress"] == 100.0  # moto's FinalMetricDataList
    assert done.artifacts["model_tar"] == f"s3://{BUCKET}/{job_prefix}/{name}/output/model.tar.gz"
    assert done.artifacts["output_tar"] == f"s3://{BUCKET}/{job_prefix}/{name}/output/output.tar.gz"
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress", "Completed"]
    assert backend.refresh(done).status == "Completed"  # terminal: no new row
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress", "Completed"]
    with pytest.raises(JobError, match="already ended"):
        backend.stop(done)


def test_a_failed_job_is_recorded_with_its_failure_reason(moto_url, dataset):
    catalog, lake, version = dataset
    backend, requests = backend_with_capture(catalog, lake, settings(moto_url))
    rec = launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake)
    req = requests[0]
    assert req["EnableManagedSpotTraining"] is False
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 24 * 3600}
    job = moto_job(training_job_name(rec))
    job.training_job_status = job.secondary_status = "InProgress"
    assert backend.refresh(rec).status == "InProgress"
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress"]  # no change, no row
    reason = "AlgorithmError: ExecuteUserScriptError: ExitCode 1 ErrorMessage \"SystemExit: no rows\""
    job.training_job_status = job.secondary_status = "Failed"
    job.failure_reason = reason
    failed = backend.refresh(rec)
    assert failed.status == "Failed" and failed.message == reason
    assert "model_tar" not in failed.artifacts
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress", "Failed"]


def test_wait_polls_until_the_job_ends(moto_url, dataset):
    catalog, lake, version = dataset
    backend = SageMakerBackend(catalog, settings(moto_url), lake=lake, poll_s=0.05)
    rec = launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake, wait=True)
    assert rec.status == "Completed"
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress", "Completed"]

    rec = launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake)
    job = moto_job(training_job_name(rec))
    job.training_job_status = "InProgress"
    polls = []
    backend.client("sagemaker").meta.events.register("provide-client-params.sagemaker.DescribeTrainingJob",
                                                     lambda params, **_: polls.append(params))
    timer = threading.Timer(0.5, setattr, (job, "training_job_status", "Completed"))
    timer.start()
    done = backend.wait(rec)
    timer.join()
    assert done.status == "Completed" and len(polls) >= 3
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress", "Completed"]


def test_stop_sends_the_request_and_surfaces_a_refusal(moto_url, dataset):
    """moto does not implement StopTrainingJob (it answers HTTP 500): the request is sent, JobError
    surfaces and nothing is recorded. With the service's answer (an empty 200) in place of moto's,
    Stopping is recorded, and SageMaker's final Stopped is picked up by refresh."""
    catalog, lake, version = dataset
    backend = SageMakerBackend(catalog, settings(moto_url), lake=lake, poll_s=0.05)
    rec = launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake)
    name = training_job_name(rec)
    job = moto_job(name)
    job.training_job_status = job.secondary_status = "InProgress"
    sent = []
    events = backend.client("sagemaker").meta.events
    events.register("provide-client-params.sagemaker.StopTrainingJob", lambda params, **_: sent.append(dict(params)))
    with pytest.raises(JobError, match=rf"StopTrainingJob {name} failed: HTTP 500"):
        backend.stop(rec)
    assert sent and sent[0] == {"TrainingJobName": name}
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress"]

    def service_answer(**_):
        return AWSResponse(f"{moto_url}/", 200, {}, None), {}

    events.register("before-call.sagemaker.StopTrainingJob", service_answer)
    stopping = backend.stop(rec)
    assert stopping.status == "Stopping" and sent[-1] == {"TrainingJobName": name}
    job.training_job_status, job.secondary_status = "Stopped", "MaxRuntimeExceeded"
    stopped = backend.refresh(stopping)
    assert stopped.status == "Stopped" and stopped.message == "MaxRuntimeExceeded"
    assert statuses(catalog, lake, rec.job_id) == ["Created", "InProgress", "Stopping", "Stopped"]


def test_logs_read_the_jobs_cloudwatch_streams(moto_url, dataset):
    catalog, lake, version = dataset
    backend = SageMakerBackend(catalog, settings(moto_url), lake=lake)
    rec = launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake)
    name = training_job_name(rec)
    logs = backend.client("logs")
    if LOG_GROUP not in [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]:
        assert list(backend.logs(rec)) == []  # no log group at all
        logs.create_log_group(logGroupName=LOG_GROUP)
    assert list(backend.logs(rec)) == []  # no stream for this job
    now = int(time.time() * 1000)
    lines = ["Invoking script with the following command:", '{"method": "dpo", "train_loss": 0.61}']
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"{name}/algo-1-1700000000")
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/algo-1-1700000000",
                        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="another-job/algo-1-1700000000")
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="another-job/algo-1-1700000000",
                        logEvents=[{"timestamp": now, "message": "not ours"}])
    assert list(backend.logs(rec)) == lines


def test_endpoint_url_setting_alone_reaches_every_client(moto_url, dataset, monkeypatch):
    """With AWS_ENDPOINT_URL pointing nowhere, the launch still works: every client the backend and
    the SDK use takes settings.endpoint_url."""
    catalog, lake, version = dataset
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    backend = SageMakerBackend(catalog, settings(moto_url), lake=lake)
    rec = launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake)
    assert rec.status == "InProgress" and moto_job(training_job_name(rec))


def test_launch_errors_are_job_errors_and_recorded_failed(moto_url, dataset):
    catalog, lake, version = dataset
    no_bucket = SageMakerBackend(catalog, settings(moto_url).model_copy(update={"s3_output": "s3://no-such-bucket/x"}),
                                 lake=lake)
    before = {j.job_id for j in registry.jobs(catalog, lake)}
    with pytest.raises(JobError, match="uploading the train split to s3://no-such-bucket/x/.*NoSuchBucket"):
        launch(catalog, no_bucket, version["version"], JobConfig(method="dpo"), lake=lake)
    [failed] = [j for j in registry.jobs(catalog, lake) if j.job_id not in before]
    assert failed.status == "Failed" and "NoSuchBucket" in failed.message
    assert statuses(catalog, lake, failed.job_id) == ["Created", "Failed"]
    for update, match in (({"role_arn": None}, "execution role ARN"), ({"s3_output": None}, "S3 output"),
                          ({"instance_type": "ml.m5.xlarge"}, "no Hugging Face training image"),
                          ({"use_spot": True, "max_wait_s": 60}, "max_wait_s")):
        backend = SageMakerBackend(catalog, settings(moto_url).model_copy(update=update), lake=lake)
        with pytest.raises(JobError, match=match):
            launch(catalog, backend, version["version"], JobConfig(method="dpo"), lake=lake)


def test_the_cli_launches_and_tracks_a_sagemaker_job(moto_url, dataset, lake, monkeypatch):
    """`flywheel finetune launch --backend sagemaker` with flags, then `status` and `list` read it back."""
    catalog, lake_settings, version = dataset
    monkeypatch.setenv("FLYWHEEL_HOME", str(lake[0].home))
    runner = CliRunner()
    out = runner.invoke(app, ["finetune", "launch", "--dataset", version["version"], "--method", "dpo",
                              "--backend", "sagemaker", "--role-arn", ROLE, "--s3-output", S3_OUTPUT,
                              "--region", REGION, "--endpoint-url", moto_url, "--spot", "--max-runtime-s", "1800",
                              "--instance-type", "ml.g5.xlarge", "--max-steps", "20"])
    assert out.exit_code == 0, out.output
    job_id = out.stdout.split()[0]
    rec = registry.latest(catalog, job_id, lake_settings)
    assert rec.backend == "sagemaker" and rec.status == "InProgress" and rec.config["max_steps"] == 20
    sm = rec.config["sagemaker"]
    assert sm["use_spot"] and sm["max_runtime_s"] == 1800 and sm["max_wait_s"] == 3600
    assert f"SageMaker training job: {sm['training_job_name']}" in out.output
    monkeypatch.setenv("FLYWHEEL_SAGEMAKER_ENDPOINT_URL", moto_url)
    status = runner.invoke(app, ["finetune", "status", job_id])
    assert status.exit_code == 0, status.output
    assert [h.status for h in registry.history(catalog, job_id, lake_settings)] == ["Created", "InProgress", "Completed"]
    assert "Completed" in status.output.splitlines()[0]
    listed = runner.invoke(app, ["finetune", "list"])
    assert any(job_id in line and "Completed" in line for line in listed.output.splitlines())
