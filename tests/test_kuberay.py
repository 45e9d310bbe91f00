"""deploy/kuberay/: the KubeRay manifests, checked offline and strictly.

The API server accepts unknown fields in a custom resource and drops them without a word,
so a RayJob with `shutdownAfterJobFinish: true` would be applied and leave its cluster
running. Here every object schema of the CRDs that lists its properties is closed
(additionalProperties: false, as `kubectl --validate=strict` does), so a misspelt field
anywhere under `spec` is an error. Free-form maps (labels, resource quantities) declare an
additionalProperties schema of their own and stay open.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import stat
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kuberay"
SCHEMA_DIRS = tuple(dict.fromkeys((ROOT.parent / "shared" / "kuberay-schemas",
                                   Path("/work/shared/kuberay-schemas"))))
SCHEMAS = {"rayjob.yaml": "rayjob.v1.schema.json",
           "raycronjob.yaml": "raycronjob.v1.schema.json",
           "raycluster.yaml": "raycluster.v1.schema.json"}


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# --- strict validation ----------------------------------------------------------------------

def _schema_dir() -> Path:
    for d in SCHEMA_DIRS:
        if all((d / f).is_file() for f in SCHEMAS.values()):
            return d
    pytest.skip("KubeRay CRD schemas not found, so the manifests are not checked against them: "
                f"put {', '.join(SCHEMAS.values())} (JSON Schema of KubeRay v1.7.0's CRDs) in "
                + " or ".join(str(d) for d in SCHEMA_DIRS))


_NAMED = ("properties", "patternProperties", "definitions", "$defs")
_LISTED = ("allOf", "anyOf", "oneOf")
_SINGLE = ("additionalProperties", "items", "additionalItems", "not", "contains", "propertyNames",
           "if", "then", "else")


def _close(schema) -> None:
    """Close, in place, every object schema that lists its properties and allows no others
    explicitly. One whose unknown fields are meant to be kept says so with
    x-kubernetes-preserve-unknown-fields; a map says what its values are with an
    additionalProperties schema. Both are left as they are."""
    if not isinstance(schema, dict):
        return
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    for key in _NAMED:
        for sub in schema.get(key, {}).values():
            _close(sub)
    for key in _LISTED:
        for sub in schema.get(key, []):
            _close(sub)
    for key in _SINGLE:
        sub = schema.get(key)
        for s in sub if isinstance(sub, list) else [sub]:
            _close(s)


@cache
def _validator(schema_file: str, strict: bool) -> jsonschema.Draft7Validator:
    schema = json.loads((_schema_dir() / schema_file).read_text())
    if strict:
        _close(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(doc: dict, schema_file: str, strict: bool = True) -> list[str]:
    errors = sorted(_validator(schema_file, strict).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def _check(doc: dict, schema_file: str, strict: bool = True) -> None:
    errors = _errors(doc, schema_file, strict)
    if errors:
        raise ValueError("\n".join(errors))


@pytest.mark.parametrize("name", SCHEMAS)
def test_manifest_validates_strictly_against_its_crd(name):
    assert _errors(_load(name), SCHEMAS[name]) == []


def _rename(node: dict, old: str, new: str) -> None:
    assert old in node, f"{old} not in {sorted(node)}"
    node[new] = node.pop(old)


def _gpu_container(cluster_spec: dict) -> dict:
    gpu = next(g for g in cluster_spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    return gpu["template"]["spec"]["containers"][0]


TYPOS = {
    "rayjob shutdownAfterJobFinish": ("rayjob.yaml", lambda d: _rename(d["spec"], "shutdownAfterJobFinishes",
                                                                      "shutdownAfterJobFinish")),
    "rayjob container resource": ("rayjob.yaml", lambda d: _rename(
        _gpu_container(d["spec"]["rayClusterSpec"]), "resources", "resource")),
    "raycronjob ttlSecondAfterFinished": ("raycronjob.yaml", lambda d: _rename(
        d["spec"]["jobTemplate"], "ttlSecondsAfterFinished", "ttlSecondAfterFinished")),
    "raycluster rayStartParam": ("raycluster.yaml", lambda d: _rename(
        d["spec"]["headGroupSpec"], "rayStartParams", "rayStartParam")),
}


@pytest.mark.parametrize("case", TYPOS)
def test_a_misspelt_field_fails_strictly_though_the_crd_accepts_it(case):
    name, mutate = TYPOS[case]
    doc = _load(name)
    mutate(doc)
    typo = case.split()[-1]
    _check(doc, SCHEMAS[name], strict=False)  # what the API server would take (and drop)
    with pytest.raises(ValueError, match=rf"Additional properties are not allowed \('{typo}' was unexpected\)"):
        _check(doc, SCHEMAS[name])


def test_free_form_maps_stay_open_and_typed():
    _schema_dir()
    doc = _load("rayjob.yaml")
    doc["metadata"]["annotations"] = {"example.org/owner": "video-team"}
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]
    head["template"]["metadata"] = {"labels": {"app.kubernetes.io/part-of": "vidan"}}
    head["rayStartParams"]["object-store-memory"] = "2000000000"
    _check(doc, "rayjob.v1.schema.json")
    head["template"]["metadata"]["labels"]["replicas"] = 3  # a label value must be a string
    with pytest.raises(ValueError, match=r"labels/replicas: 3 is not of type 'string'"):
        _check(doc, "rayjob.v1.schema.json")


# --- what vidan needs of the manifests (no schema needed) -----------------------------------

def _vidan_args(argv: list[str]):
    from vidan.cli import _parser

    try:
        return _parser().parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"vidan's command line refuses {shlex.join(argv)}") from e


def _cluster_specs() -> dict[str, dict]:
    return {"rayjob": _load("rayjob.yaml")["spec"]["rayClusterSpec"],
            "raycronjob": _load("raycronjob.yaml")["spec"]["jobTemplate"]["rayClusterSpec"],
            "raycluster": _load("raycluster.yaml")["spec"]}


def _containers(doc: dict):
    """Every container of every pod template in a manifest."""
    if isinstance(doc, dict):
        if isinstance(doc.get("containers"), list):
            yield from doc["containers"]
        for v in doc.values():
            yield from _containers(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _containers(v)


def test_rayjob_runs_vidan_analyze_on_object_storage_and_cleans_up():
    doc = _load("rayjob.yaml")
    spec = doc["spec"]
    assert len(doc["metadata"]["name"]) <= 47  # the operator refuses longer RayJob names
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 1
    assert "jobId" not in spec and "clusterSelector" not in spec
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "vidan"
    args = _vidan_args(argv[1:])
    assert args.command == "analyze"
    assert args.paths and all(p.startswith("s3://") for p in args.paths)
    assert args.out.startswith("s3://")
    assert args.address is None  # inside a Ray job, RAY_ADDRESS names the cluster


@pytest.mark.parametrize("which", ["rayjob", "raycronjob", "raycluster"])
def test_cluster_has_an_idle_head_and_gpu_workers_from_zero(which):
    spec = _cluster_specs()[which]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert not spec["headGroupSpec"].get("enableIngress", False)
    gpu, cpu = [], []
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        gpus = int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
        (gpu if gpus else cpu).append(group)
    assert gpu and cpu, "needs a GPU worker group and a CPU worker group"
    for group in gpu:
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0
        assert group["maxReplicas"] >= 1


def test_storage_keys_come_only_from_secrets():
    for name in (*SCHEMAS, "cronjob-submit.yaml"):
        for container in _containers(_load(name)):
            env = {e["name"]: e for e in container.get("env", [])}
            for var, entry in env.items():
                if var.startswith("AWS_") or var == "RAY_AUTH_TOKEN":
                    assert "value" not in entry, f"{name}: {var} is written inline"
                    assert entry["valueFrom"]["secretKeyRef"]["key"], f"{name}: {var} not from a Secret"
            if name in SCHEMAS:  # Ray pods read s3:// themselves
                for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert var in env, f"{name}: container {container['name']} has no {var}"
                    assert env[var]["valueFrom"]["secretKeyRef"].get("optional") is not True


def test_cron_template_and_long_lived_cluster_match_the_rayjob():
    job = _load("rayjob.yaml")
    cron = _load("raycronjob.yaml")
    assert cron["spec"]["jobTemplate"] == job["spec"]
    assert _load("raycluster.yaml")["spec"] == job["spec"]["rayClusterSpec"]
    assert len(cron["metadata"]["name"]) <= 36  # the operator refuses longer RayCronJob names
    assert len(cron["spec"]["schedule"].split()) == 5


def test_images_carry_this_vidan_and_the_ray_the_manifests_name():
    version = _version()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-", dockerfile, re.M)
    assert base, "the Dockerfile does not build on a versioned rayproject/ray image"
    assert f"dist/vidan-{version}-py3-none-any.whl" in dockerfile
    assert f'"ray[default]=={base[1]}"' in dockerfile
    for which, spec in _cluster_specs().items():
        assert spec["rayVersion"] == base[1], f"{which}: rayVersion is not the image's Ray"
    for name in (*SCHEMAS, "cronjob-submit.yaml"):
        for container in _containers(_load(name)):
            assert container["image"] == f"vidan:{version}", f"{name}: {container['name']}"


# --- the CronJob for operators without the RayCronJob gate ---------------------------------

CRONJOB_SPEC_KEYS = {"schedule", "timeZone", "concurrencyPolicy", "startingDeadlineSeconds",
                     "successfulJobsHistoryLimit", "failedJobsHistoryLimit", "suspend", "jobTemplate"}
JOB_SPEC_KEYS = {"activeDeadlineSeconds", "backoffLimit", "backoffLimitPerIndex", "completionMode",
                 "completions", "manualSelector", "maxFailedIndexes", "parallelism", "podFailurePolicy",
                 "podReplacementPolicy", "selector", "successPolicy", "suspend", "template",
                 "ttlSecondsAfterFinished", "managedBy"}


def _submit_container(doc: dict) -> dict:
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def test_cronjob_submit_is_a_forbid_cronjob_against_the_clusters_dashboard():
    doc = _load("cronjob-submit.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "CronJob")
    spec = doc["spec"]
    assert set(spec) <= CRONJOB_SPEC_KEYS, f"unknown CronJob fields: {set(spec) - CRONJOB_SPEC_KEYS}"
    assert set(spec["jobTemplate"]["spec"]) <= JOB_SPEC_KEYS
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    container = _submit_container(doc)
    assert container["command"] == ["sh", "-c"] and len(container["args"]) == 1
    cluster = _load("raycluster.yaml")["metadata"]["name"]
    # KubeRay names the head Service <cluster>-head-svc, and the token Secret after the cluster
    assert f"--address http://{cluster}-head-svc:8265" in container["args"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": cluster, "key": "auth_token"}


def test_cronjob_shell_line_submits_with_the_days_id(tmp_path):
    # The line runs through a real sh with a stand-in `vidan` that records its arguments:
    # what matters here is what the shell makes of the quoting and of $(date).
    record = tmp_path / "argv"
    fake = tmp_path / "vidan"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {shlex.quote(str(record))}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    container = _submit_container(_load("cronjob-submit.yaml"))
    before = datetime.datetime.now(datetime.timezone.utc).date()
    subprocess.run([*container["command"], container["args"][0]], check=True, timeout=10,
                   env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    after = datetime.datetime.now(datetime.timezone.utc).date()
    args = _vidan_args(record.read_text().splitlines())
    assert args.command == "submit"
    assert args.submission_id in {f"nightly-{before.isoformat()}", f"nightly-{after.isoformat()}"}
    assert args.paths and all(p.startswith("s3://") for p in args.paths)
    assert args.out.startswith("s3://")
    assert args.address == f"http://{_load('raycluster.yaml')['metadata']['name']}-head-svc:8265"
