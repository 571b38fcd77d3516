"""The orchestrator recipes under examples/ stay in step with the CLI (issue 17, findings 1 and 2).

Each example file is parsed the way its orchestrator reads it (the Airflow DAG by Python's ``ast``, never
importing Airflow; Kubernetes by PyYAML; AWS Batch's job definition as JSON; shell scripts by running them
under ``sh``/``bash`` with stand-ins for ``aws``, ``sbatch``, ``kubectl`` and ``sparsesync`` on PATH that
only record their arguments and environment). Then:

* every ``sparsesync …`` command line goes through the REAL CLI parser (click's parse of
  :data:`sparsesync.cli.app`, without executing; plus ``--help``), shell variables given sample values;
* every task, container or job that runs ``plan``, ``execute``, ``run``, ``finalize`` or ``verify``
  (they all connect to the source) has ``SPARSESYNC_SOURCE_PASSWORD`` or ``SPARSESYNC_SOURCE_URL`` in
  the environment that command actually sees;
* a ``finalize`` passes ``--iam-role`` (it writes copy.sql);
* a plan read from a ConfigMap goes through a step that refuses a plan over the ConfigMap limit, or the
  plan is fetched by an init step (any size).

The checks are shown to catch today's README recipes (fixtures below: the README's DAG before issue 17,
whose finalize had no password environment, and its Kubernetes Job, whose plan came from a ConfigMap no
step filled).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from sparsesync.cli import _register, app
from sparsesync.executor.shard import parse_shard

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SOURCE_COMMANDS = {"plan", "execute", "run", "finalize", "verify", "sync"}
PASSWORD_VARS = ("SPARSESYNC_SOURCE_PASSWORD", "SPARSESYNC_SOURCE_URL")
CONFIGMAP_LIMIT = 1024 * 1024  # bytes, a ConfigMap's data and metadata together

_register()
CLICK_APP = typer.main.get_command(app)


# ---- running command lines with recording stand-ins ---------------------------------------------------------
STUB = """#!{python} -S
import json, os, sys
name = os.path.basename(sys.argv[0])
env = {{k: os.environ[k] for k in os.environ if k.startswith(("SPARSESYNC_", "PLAN", "DEST", "IAM_ROLE", "JOB_", "AWS_BATCH", "SLURM"))}}
rec = {{"prog": name, "argv": sys.argv[1:], "env": env, "cwd": os.getcwd()}}
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(rec) + "\\n")
if name == "sbatch":
    print(4242)
elif name == "aws" and sys.argv[1:3] == ["batch", "submit-job"]:
    print("job-array-1" if "--array-properties" in sys.argv else "job-finalize-1")
elif name == "kubectl" and "--dry-run=client" in sys.argv:
    print("kind: ConfigMap")
"""


class Recorder:
    """Runs argv (a shell line, a container command) with stand-in programs that log their calls."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "stub-bin"
        self.bin.mkdir()
        self.log = tmp_path / "stub-calls.jsonl"
        self.home = tmp_path / "home"
        (self.home / ".sparsesync").mkdir(parents=True)
        (self.home / ".sparsesync" / "mysql-etl.password").write_text("sample-password")
        for name in ("sparsesync", "sparsesync-fetch-plan", "aws", "sbatch", "kubectl"):
            p = self.bin / name
            p.write_text(STUB.format(python=sys.executable))
            p.chmod(0o755)

    def run(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        base = {"PATH": f"{self.bin}:/usr/bin:/bin", "STUB_LOG": str(self.log), "HOME": str(self.home)}
        res = subprocess.run(argv, env={**base, **(env or {})}, cwd=cwd or self.home, capture_output=True,
                             text=True, timeout=60)
        if check:
            assert res.returncode == 0, f"{argv}: {res.stderr}"
        return res

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        out = [json.loads(line) for line in self.log.read_text().splitlines()]
        self.log.unlink()
        return out


# ---- the CLI parser and the checks ---------------------------------------------------------------------------
_HELPED: set[str] = set()


def parse_cli(args: list[str], env: dict[str, str]) -> tuple[str, dict]:
    """Parse ``sparsesync ARGS`` with the real click command (nothing runs); the subcommand and its params."""
    ctx = CLICK_APP.make_context("sparsesync", list(args))
    rest = [*(getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", [])), *ctx.args]
    name, sub, rest = CLICK_APP.resolve_command(ctx, rest)
    params = sub.make_context(name, rest, parent=ctx).params
    if name not in _HELPED:  # once per subcommand: its --help renders (rich) and exits 0
        helped = CliRunner().invoke(app, [*args, "--help"])
        assert helped.exit_code == 0, helped.output
        _HELPED.add(name)
    if params.get("shard"):
        old = {k: os.environ.get(k) for k in ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")}
        try:
            os.environ.update({k: v for k, v in env.items() if k in old})
            parse_shard(params["shard"])  # the value too (auto/N reads the orchestrator's index)
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return name, params


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def check_calls(where: str, calls: list[dict], problems: Problems) -> list[tuple[str, dict]]:
    """The recorded ``sparsesync`` calls of one task: parsed, password environment, --iam-role."""
    parsed = []
    for c in calls:
        if c["prog"] != "sparsesync":
            continue
        try:
            name, params = parse_cli(c["argv"], c["env"])
        except Exception as exc:  # noqa: BLE001 - any parse failure is a broken recipe
            problems.add(where, f"`sparsesync {shlex.join(c['argv'])}` does not parse: {exc}")
            continue
        if name in SOURCE_COMMANDS and not any(c["env"].get(v) for v in PASSWORD_VARS):
            problems.add(where, f"`sparsesync {name}` reaches the source without {' or '.join(PASSWORD_VARS)} in its environment")
        if name == "finalize" and not params.get("iam_role"):
            problems.add(where, "`sparsesync finalize` writes copy.sql without --iam-role")
        parsed.append((name, params))
    return parsed


# ---- Airflow: the DAG file by its syntax tree ------------------------------------------------------------------
@dataclass
class AirflowTask:
    name: str
    commands: list[str]
    env: dict | None


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def airflow_tasks(source: str) -> list[AirflowTask]:
    """Every bash task of a DAG file: ``@task.bash`` functions and ``BashOperator`` (also ``.partial().expand()``),
    with their command lines and ``env`` evaluated from the module's constants (Airflow is never imported)."""
    tree = ast.parse(source)
    ns: dict = {"os": os, "shlex": shlex}
    for node in tree.body:  # module constants: PLAN = os.environ.get(...), SOURCE_ENV = {...}, ...
        if isinstance(node, ast.Assign):
            try:
                exec(compile(ast.Module([node], []), "<dag>", "exec"), ns)  # noqa: S102 - our example file
            except Exception:  # noqa: BLE001 - not a constant (an operator, a call of Airflow's)
                pass

    def value(expr, extra=None):
        return None if expr is None else eval(compile(ast.Expression(expr), "<dag>", "eval"), {**ns, **(extra or {})})  # noqa: S307

    tasks = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                call = dec if isinstance(dec, ast.Call) else None
                target = call.func if call else dec
                if isinstance(target, ast.Attribute) and target.attr == "bash":
                    sample = {a.arg: 1 for a in node.args.args}  # mapped arguments (the shard number)
                    cmds = [value(r.value, sample) for r in ast.walk(node) if isinstance(r, ast.Return)]
                    tasks.append(AirflowTask(node.name, cmds, value(_kw(call, "env")) if call else None))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "expand":
            partial = node.func.value
            if isinstance(partial, ast.Call) and isinstance(partial.func, ast.Attribute) and partial.func.attr == "partial":
                name = value(_kw(partial, "task_id"))
                cmds = value(_kw(node, "bash_command"))
                tasks.append(AirflowTask(name, list(cmds)[:2], value(_kw(partial, "env"))))  # one expression: 2 suffice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "BashOperator":
            tasks.append(AirflowTask(value(_kw(node, "task_id")), [value(_kw(node, "bash_command"))],
                                     value(_kw(node, "env"))))
    return tasks


def check_airflow(source: str, rec: Recorder) -> tuple[Problems, list[str]]:
    problems, seen = Problems(), []
    for t in airflow_tasks(source):
        # Templates ({{ conn.mysql_etl.password }}) are rendered by Airflow when the task runs: a sample here.
        env = {k: "sample-password" if "{{" in str(v) else str(v) for k, v in (t.env or {}).items()}
        for cmd in t.commands:
            rec.run(["bash", "-c", cmd], env=env)
            seen += [f"{t.name}:{n}" for n, _ in check_calls(f"task {t.name}", rec.calls(), problems)]
    return problems, seen


# Issue 17's finding 1: the README's DAG and classic-operator lines before the fix (finalize: no env).
README_DAG_BEFORE = textwrap.dedent('''
    import pendulum
    from airflow.decorators import dag, task

    PLAN, DEST, N = "/opt/plans/orders-20250101T000000Z-abc123.json", "s3://lake/exports", 8


    @dag(schedule="@daily", start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False)
    def export_orders():
        @task.bash(retries=3, env={"SPARSESYNC_SOURCE_PASSWORD": "{{ conn.mysql_etl.password }}"}, append_env=True)
        def shard(i: int) -> str:
            return f"sparsesync execute {PLAN} --dest {DEST} --shard {i}/{N}"

        @task.bash
        def finalize() -> str:
            return f"sparsesync finalize {PLAN} --dest {DEST} --iam-role arn:aws:iam::123:role/load"

        shard.expand(i=list(range(1, N + 1))) >> finalize()  # finalize runs once every mapped shard succeeded


    export_orders()

    BashOperator.partial(task_id="shard", retries=3).expand(bash_command=[f"sparsesync execute {PLAN} --dest {DEST} --shard {i}/{N}" for i in range(1, N + 1)])
    BashOperator(task_id="finalize", bash_command=f"sparsesync finalize {PLAN} --dest {DEST}")
''')


@pytest.fixture
def rec(tmp_path, monkeypatch):
    for name in ("SPARSESYNC_DAG_PLAN", "SPARSESYNC_DAG_DEST", "SPARSESYNC_DAG_SHARDS", "SPARSESYNC_DAG_IAM_ROLE"):
        monkeypatch.delenv(name, raising=False)
    return Recorder(tmp_path)


def test_the_readme_dag_before_issue_17_is_caught(rec):
    problems, seen = check_airflow(README_DAG_BEFORE, rec)
    assert "finalize:finalize" in seen and "shard:execute" in seen
    text = "\n".join(problems.items)
    assert "task finalize: `sparsesync finalize` reaches the source without SPARSESYNC_SOURCE_PASSWORD" in text
    assert "task shard: `sparsesync execute` reaches the source without" in text  # the classic operator's
    assert "task finalize: `sparsesync finalize` writes copy.sql without --iam-role" in text


def test_the_airflow_example_dag(rec):
    source = (EXAMPLES / "airflow" / "sparsesync_dag.py").read_text()
    problems, seen = check_airflow(source, rec)
    assert problems.items == []
    # Both DAGs: the mapped shards (the classic list's first two), finalize, and verify (decorated form).
    assert seen.count("shard:execute") == 1 + 2 and seen.count("finalize:finalize") == 2 and "verify:verify" in seen
    assert "airflow.sdk" in source and "airflow.decorators" in source  # Airflow 3, and 2.9+


# ---- Kubernetes ------------------------------------------------------------------------------------------------
def _k8s_pod_calls(doc: dict, rec: Recorder, problems: Problems, where: str):
    """Run each container of a Job's pod (init containers first) with its env; the sparsesync calls per container."""
    spec = doc["spec"]["template"]["spec"]
    indexed = doc["spec"].get("completionMode") == "Indexed"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    out = []
    for kind in ("initContainers", "containers"):
        for c in spec.get(kind, []):
            env = {e["name"]: str(e.get("value", "sample-secret")) for e in c.get("env", [])}
            if indexed:
                env["JOB_COMPLETION_INDEX"] = "2"  # set by Kubernetes in every pod of an Indexed Job
            argv = [*c.get("command", []), *c.get("args", [])]
            assert argv, f"{where}: container {c['name']} runs the image's default command"
            rec.run(argv, env=env)
            calls = rec.calls()
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            out.append((kind, c, calls, mounts, check_calls(f"{where} container {c['name']}", calls, problems)))
    return out


def check_kubernetes(docs: list[dict], rec: Recorder, publish: Path | None, tmp_path: Path) -> tuple[Problems, list]:
    problems, seen = Problems(), []
    for doc in docs:
        if not doc or doc.get("kind") != "Job":
            continue
        where = f"Job {doc['metadata']['name']}"
        pods = _k8s_pod_calls(doc, rec, problems, where)
        fetched = {c2["argv"][-1] for kind, _c, calls, _m, _p in pods if kind == "initContainers"
                   for c2 in calls if c2["prog"] == "sparsesync-fetch-plan"}
        for kind, c, calls, mounts, parsed in pods:
            for name, params in parsed:
                seen.append(f"{doc['metadata']['name']}:{name}")
                plan = str(params.get("plan_file") or "")
                if not plan:
                    continue
                vol = next((v for m, v in mounts.items() if plan.startswith(m.rstrip("/") + "/")), None)
                if vol is not None and "configMap" in vol:
                    key = plan.rsplit("/", 1)[1]
                    if publish is None:
                        problems.add(where, f"the plan {plan} comes from ConfigMap {vol['configMap']['name']} (key {key}) "
                                            "but no step of the recipe puts it there or checks its 1 MiB limit")
                    else:
                        check_publish_configmap(publish, rec, tmp_path, key, problems)
                elif plan not in fetched:
                    problems.add(where, f"nothing puts the plan at {plan} (no ConfigMap, no init step)")
    return problems, seen


def check_publish_configmap(script: Path, rec: Recorder, tmp_path: Path, key: str, problems: Problems) -> None:
    """The recipe's plan → ConfigMap step: the key the pods read, and a refusal over the ConfigMap limit."""
    small, big = tmp_path / "orders-small.json", tmp_path / "orders-big.json"
    small.write_text('{"ranges": []}')
    big.write_text('{"ranges": [' + ",".join(['[1, 2, 3]'] * (CONFIGMAP_LIMIT // 8)) + "]}")
    res = rec.run(["sh", str(script), "--configmap", "orders-plan", str(small)], check=False)
    calls = rec.calls()
    creates = [c for c in calls if c["prog"] == "kubectl" and c["argv"][:2] == ["create", "configmap"]]
    if res.returncode != 0 or not creates or f"--from-file={key}={small}" not in creates[0]["argv"]:
        problems.add(str(script), f"a small plan is not published as ConfigMap key {key}: {res.stderr.strip()}")
    res = rec.run(["sh", str(script), "--configmap", "orders-plan", str(big)], check=False)
    if res.returncode == 0 or any(c["prog"] == "kubectl" for c in rec.calls()) or "S3" not in res.stderr:
        problems.add(str(script), "a plan over a ConfigMap's 1 MiB is not refused with the advice to use S3")


README_K8S_BEFORE = textwrap.dedent('''
    apiVersion: batch/v1
    kind: Job
    metadata: {name: export-orders}
    spec:
      completionMode: Indexed
      completions: 8
      parallelism: 8
      backoffLimitPerIndex: 3
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: shard
              image: registry.example.com/sparsesync:0.1.0
              command: ["sh", "-c", "sparsesync execute /plans/orders.json --dest s3://lake/exports --shard $((JOB_COMPLETION_INDEX+1))/8"]
              env:
                - name: SPARSESYNC_SOURCE_PASSWORD
                  valueFrom: {secretKeyRef: {name: mysql-etl, key: password}}
              volumeMounts: [{name: plans, mountPath: /plans}]
          volumes: [{name: plans, configMap: {name: orders-plan}}]
''')


def test_the_readme_kubernetes_job_before_issue_17_is_caught(rec, tmp_path):
    problems, seen = check_kubernetes(list(yaml.safe_load_all(README_K8S_BEFORE)), rec, None, tmp_path)
    assert seen == ["export-orders:execute"]
    assert len(problems.items) == 1 and "ConfigMap orders-plan (key orders.json)" in problems.items[0]


def test_the_kubernetes_example(rec, tmp_path):
    k8s = EXAMPLES / "kubernetes"
    docs = [d for f in ("job-shards.yaml", "job-finalize.yaml") for d in yaml.safe_load_all((k8s / f).read_text())]
    problems, seen = check_kubernetes(docs, rec, k8s / "publish-plan.sh", tmp_path)
    assert problems.items == [] and seen == ["export-orders:execute", "finalize-orders:finalize"]
    # The ConfigMap route the files describe, for small plans: the step refuses what does not fit.
    publish = Problems()
    check_publish_configmap(k8s / "publish-plan.sh", rec, tmp_path, "orders.json", publish)
    assert publish.items == []
    # The image they name is built by the Dockerfile beside them, from the checkout's wheel.
    image = {c["image"] for d in docs for kind in ("initContainers", "containers")
             for c in d["spec"]["template"]["spec"].get(kind, [])}
    docker = (k8s / "Dockerfile").read_text()
    assert len(image) == 1 and image.pop() in docker and "pip wheel" in docker
    assert "sparsesync-fetch-plan" in docker and (EXAMPLES / "fetch_plan.py").is_file()


def test_a_10000_range_plan_does_not_fit_a_configmap(tmp_path):
    """What the recipe says: a ConfigMap holds a plan of a few thousand ranges (the histogram counts too), so
    the README's 10,000-range plans go through S3."""
    from sparsesync.planner.api import make_plan
    from tests.executor.test_run import make_sqlite_table

    url = f"sqlite:///{tmp_path / 'src.db'}"
    keys = [k * 7919 + (k % 13) * 10**9 for k in range(1, 501)]  # sparse: no two ranges alike
    make_sqlite_table(url, keys)
    plan = make_plan(url, "t", rows_per_query=1, file_size=1, use_cache=False, density="exact")
    size = len(plan.save(tmp_path / "p.json").read_bytes())
    per_range = size / len(plan.ranges)
    assert len(plan.ranges) >= 250
    assert per_range * 10_000 > CONFIGMAP_LIMIT  # 10,000 ranges never fit (here ~330 bytes a range)


def test_fetch_plan_copies_whole_or_fails_in_one_line(tmp_path):
    src = tmp_path / "p.json"
    src.write_text("{}")
    ok = subprocess.run([sys.executable, str(EXAMPLES / "fetch_plan.py"), str(src), str(tmp_path / "d" / "o.json")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and (tmp_path / "d" / "o.json").read_text() == "{}"
    bad = subprocess.run([sys.executable, str(EXAMPLES / "fetch_plan.py"), str(tmp_path / "nope"), str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 8 and bad.stderr.count("\n") == 1 and not (tmp_path / "x.json").exists()


# ---- AWS Batch ---------------------------------------------------------------------------------------------------
def test_the_aws_batch_example(rec, tmp_path):
    batch = EXAMPLES / "aws-batch"
    jobdef = json.loads((batch / "job-definition.json").read_text())
    props = jobdef["containerProperties"]
    job_env = {e["name"]: e["value"] for e in props.get("environment", [])}
    job_env.update({s["name"]: "sample-secret" for s in props.get("secrets", [])})
    assert props["jobRoleArn"] and jobdef["retryStrategy"]["attempts"] >= 2
    plan = tmp_path / "orders-20250101T000000Z-abc123.json"
    plan.write_text("{}")
    rec.run(["sh", str(batch / "submit.sh"), str(plan)])
    calls = rec.calls()
    problems = Problems()
    check_calls("submit.sh", [c for c in calls if c["prog"] == "sparsesync"], problems)  # its `show`
    submits = [c["argv"] for c in calls if c["prog"] == "aws" and c["argv"][:2] == ["batch", "submit-job"]]
    assert len(submits) == 2
    seen = []
    for argv in submits:
        opts = dict(zip(argv[2::2], argv[3::2]))
        assert opts["--job-definition"] == jobdef["jobDefinitionName"]
        env = dict(job_env)
        if "--array-properties" in opts:
            assert opts["--array-properties"] == "size=8"
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = "2"
        else:
            assert opts["--depends-on"] == "jobId=job-array-1"  # finalize after the whole array
        command = json.loads(opts["--container-overrides"])["command"]
        rec.run(command, env=env)
        seen += [n for n, _ in check_calls(f"job {opts['--job-name']}", rec.calls(), problems)]
    assert problems.items == [] and seen == ["execute", "finalize"]


# ---- Slurm --------------------------------------------------------------------------------------------------------
def test_the_slurm_example(rec, tmp_path):
    slurm = EXAMPLES / "slurm"
    plan = tmp_path / "orders-20250101T000000Z-abc123.json"
    plan.write_text("{}")
    rec.run(["sh", str(slurm / "submit.sh"), str(plan)])
    calls = rec.calls()
    problems = Problems()
    check_calls("submit.sh", [c for c in calls if c["prog"] == "sparsesync"], problems)
    sbatch = [c for c in calls if c["prog"] == "sbatch"]
    assert [Path(c["argv"][-1]).name for c in sbatch] == ["shard.sbatch", "finalize.sbatch"]
    assert "--array=1-8" in sbatch[0]["argv"] and "--dependency=afterok:4242" in sbatch[1]["argv"]
    seen = []
    for c in sbatch:
        script = Path(c["argv"][-1])
        assert "#SBATCH --array=1-8" in script.read_text() or "finalize" in script.name
        env = {k: v for k, v in c["env"].items() if k in ("PLAN", "DEST", "IAM_ROLE")}  # --export=ALL
        if "--array=1-8" in c["argv"]:
            env.update(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="8")
        rec.run(["bash", str(script)], env=env)
        for n, params in check_calls(script.name, rec.calls(), problems):
            seen.append(n)
            if n == "execute":
                assert params["shard"] == "3/8"
    assert problems.items == [] and seen == ["execute", "finalize"]


# ---- the README points at the files instead of carrying copies ----------------------------------------------------
def test_the_readme_links_every_example_and_carries_no_stale_copy():
    readme = (ROOT / "README.md").read_text()
    for rel in ("examples/airflow/sparsesync_dag.py", "examples/kubernetes/job-shards.yaml",
                "examples/kubernetes/job-finalize.yaml", "examples/kubernetes/publish-plan.sh",
                "examples/kubernetes/Dockerfile", "examples/aws-batch/job-definition.json",
                "examples/aws-batch/submit.sh", "examples/slurm/shard.sbatch", "examples/slurm/submit.sh"):
        assert rel in readme and (ROOT / rel).is_file(), rel
    assert "finalize-pod.json" not in readme
    # Every `sparsesync finalize` line left in the README names --iam-role.
    for line in re.findall(r"sparsesync finalize [^\n`']*", readme):
        assert "--iam-role" in line or "PLAN --dest …" in line, line
