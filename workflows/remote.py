"""Remote workflows: every :class:`~workflows.framework.HSBIWorkflow` runs its branches as local
tasks (default), as SLURM jobs or as HTCondor jobs (``--workflow local|slurm|htcondor``).

What this module supplies, on top of law's ``SlurmWorkflow`` and ``HTCondorWorkflow``:

- **job resources** per task: ``--job-cpus``, ``--job-memory``, ``--job-walltime`` (and
  ``--slurm-partition``, ``--slurm-account``, ``--htcondor-accounting-group``). A value given on
  the command line (``--TrainEstimator-job-cpus 4``) or in the task's luigi section of law.cfg
  (``[luigi_TrainEstimator] job_cpus: 4``) wins over the site-wide default in ``[hsbi_jobs]``.
- **a bootstrap script** written next to the job files at submission: it exports the same
  ``HSBI_BASE``, ``HSBI_STORE``, ``LAW_CONFIG_FILE`` and ``PYTHONPATH`` as the submitting shell
  and activates the project's ``.venv``, so a job sees the same code, configuration and store (the
  store must be on a file system shared with the nodes). With ``[hsbi_jobs] image`` set, the job
  instead runs law's job script inside that Apptainer image (``containers/apptainer.def``), with
  the store and job directories bound at the same paths.
- **the job directory** ``$HSBI_JOB_DIR`` (default ``[hsbi_jobs] dir``): per workflow a folder
  ``<Task>/<key>/<slurm|htcondor>/`` (the key hashes the first branch's address and the store)
  with law's submission record (``*_jobs_*.json``, which is how an interrupted submission
  resumes), the job files and one log per job.
- **an address check**: the branch addresses computed at submission go to ``addresses.json`` in
  the job directory; a job whose branch address differs (code, config or image changed since)
  stops before luigi would rebuild its inputs at other addresses.
- **failure reports**: when jobs end up failed after ``--retries`` resubmissions, one line per
  failed branch names the task, the branch (with its branch data), the job id and the log file.
- ``--fail-branches`` (testing only): the listed branches raise at the start of ``run()``, so the
  retry and reporting machinery can be exercised against a real batch system.

Nothing here imports torch or hsbi's heavy modules; the batch-system clients (``sbatch``,
``squeue``, ``condor_submit``, ...) are only called when a remote workflow actually runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import law
import luigi

law.contrib.load("slurm", "htcondor")

__all__ = ["AddressMismatch", "BranchFailure", "HSBIRemoteWorkflow", "job_config", "jobs_root"]

#: the checkout (parent of workflows/)
BASE = Path(__file__).resolve().parents[1]
_SECTION = "hsbi_jobs"
_NO_STR = law.NO_STR
_NO_INT = law.NO_INT


class BranchFailure(RuntimeError):
    """Raised by a branch listed in ``--fail-branches`` (testing the failure handling)."""


class AddressMismatch(RuntimeError):
    """A job computed another address for its branch than the submitting process did."""


def job_config(key: str, default: Any = None) -> Any:
    """A key of law.cfg's ``[hsbi_jobs]``, environment variables expanded; empty -> default."""
    value = law.config.get_expanded(_SECTION, key, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return value.strip() if isinstance(value, str) else value


def jobs_root() -> Path:
    """Where job files and logs go: $HSBI_JOB_DIR, else ``[hsbi_jobs] dir``, else
    $LAW_HOME/jobs."""
    root = os.environ.get("HSBI_JOB_DIR") or job_config("dir")
    if not root or "$" in root:  # an unset variable left unexpanded
        root = os.path.join(os.environ.get("LAW_HOME") or str(BASE / ".law"), "jobs")
    return Path(root).expanduser().resolve()


def _memory_mb(value: str) -> int:
    """'2GB', '1500MB', '2G' or a plain number of MB -> MB."""
    text = str(value).strip().upper().replace("IB", "B")
    if text.endswith(("G", "M", "K")):
        text += "B"
    return max(1, int(round(law.util.parse_bytes(text, input_unit="MB", unit="MB"))))


def _seconds(value: str) -> int:
    """'2h', '30min', '90s', '01:30:00' or a plain number of minutes -> seconds."""
    text = str(value).strip()
    if ":" in text:
        parts = [float(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.insert(0, 0.0)
        return int(parts[0] * 3600 + parts[1] * 60 + parts[2])
    return max(1, int(round(law.util.parse_duration(text, input_unit="min", unit="s"))))


_BOOTSTRAP = """\
#!/usr/bin/env bash
# hsbi job bootstrap, written by workflows/remote.py at submission; sourced by law's job script.
# It recreates the submitting shell's hsbi environment on the node.
export HSBI_BASE={base}
export HSBI_STORE={store}
export LAW_CONFIG_FILE={law_config}
export HSBI_JOB_DIR={job_dir}
# the branch addresses computed at submission; a job whose own differ stops (see remote.py)
export HSBI_EXPECTED_ADDRESSES={expected}
export PYTHONPATH={pythonpath}
export MPLBACKEND=Agg
export PYTHONUNBUFFERED=1
export PYTHONWARNINGS="${{PYTHONWARNINGS:-ignore::DeprecationWarning}}"
# law's home (task index) is per job: the job calls its task by module path, needs no index
export LAW_HOME="${{LAW_JOB_HOME:-${{TMPDIR:-/tmp}}}}/law_home"
export MPLCONFIGDIR="${{LAW_JOB_HOME:-${{TMPDIR:-/tmp}}}}/mplconfig"
mkdir -p "${{LAW_HOME}}" "${{MPLCONFIGDIR}}"
# a batch system may start the job with an empty or root-less environment
export HOME="${{HOME:-${{LAW_JOB_HOME:-/tmp}}}}"
[ -w "${{HOME}}" ] || export HOME="${{LAW_JOB_HOME:-/tmp}}"
{activate}
if ! command -v law >/dev/null; then
    echo "hsbi bootstrap: law not found after activation" >&2
    return 1
fi
echo "hsbi bootstrap: $(hostname) uid $(id -u) python $(command -v python3) store ${{HSBI_STORE}}"
"""

_ACTIVATE_VENV = """\
if [ -f "{venv}/bin/activate" ]; then
    source "{venv}/bin/activate" || return 1
else
    echo "hsbi bootstrap: no virtual environment at {venv} (run 'source setup.sh' once)" >&2
    return 1
fi"""

# inside the image: the project is installed in /opt/hsbi/.venv (containers/apptainer.def)
_ACTIVATE_IMAGE = """\
source /opt/hsbi/.venv/bin/activate || return 1"""

_WRAPPER = """\
#!/usr/bin/env bash
# hsbi job wrapper, written by workflows/remote.py and rendered per job by law: runs law's job
# script inside an Apptainer image, with the store and the job directory bound at the same paths.
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
law_job_sh=""
for f in "{{{{job_file}}}}" "${{here}}/{{{{job_file}}}}"; do
    [ -f "${{f}}" ] && law_job_sh="${{f}}" && break
done
if [ -z "${{law_job_sh}}" ]; then
    >&2 echo "hsbi wrapper: law job script {{{{job_file}}}} not found (cwd $PWD, ${{here}})"
    exit 5
fi
exec {apptainer} exec --cleanenv --bind {binds} --bind "$PWD" --pwd "$PWD" {image} \\
    bash "${{law_job_sh}}" "$@"
"""


class HSBIRemoteWorkflow(law.slurm.SlurmWorkflow, law.htcondor.HTCondorWorkflow):
    """SLURM and HTCondor submission for hsbi workflows (mixed into ``HSBIWorkflow`` after
    ``law.LocalWorkflow``, so ``local`` stays the default workflow type)."""

    job_cpus = luigi.IntParameter(
        default=_NO_INT,
        significant=False,
        description="CPUs requested per batch job; default: [hsbi_jobs] cpus",
    )
    job_gpus = luigi.IntParameter(
        default=_NO_INT,
        significant=False,
        description="GPUs requested per batch job (SLURM --gres=gpu:N, HTCondor request_gpus); default: "
        "[hsbi_jobs] gpus (0: none)",
    )
    job_memory = luigi.Parameter(
        default=_NO_STR,
        significant=False,
        description="memory requested per batch job, e.g. 2GB; default: [hsbi_jobs] memory",
    )
    job_walltime = luigi.Parameter(
        default=_NO_STR,
        significant=False,
        description="wall-time limit requested per batch job, e.g. 2h or 01:30:00; default: "
        "[hsbi_jobs] walltime",
    )
    slurm_account = luigi.Parameter(
        default=_NO_STR,
        significant=False,
        description="SLURM account (--account) of the jobs; default: [hsbi_jobs] slurm_account",
    )
    htcondor_accounting_group = luigi.Parameter(
        default=_NO_STR,
        significant=False,
        description="HTCondor accounting_group of the jobs; default: [hsbi_jobs] "
        "htcondor_accounting_group",
    )
    fail_branches = law.CSVParameter(
        cls=luigi.IntParameter,
        default=(),
        significant=False,
        description="testing only: these branches raise at the start of run(), to exercise "
        "retries and failure reports; default: none",
    )

    # job logs are always written (law's 'transfer' is a copy on the shared job directory), so a
    # failure can be reported with its log file
    transfer_logs = luigi.BoolParameter(
        default=True,
        significant=False,
        description="write one combined log per job into the job directory; default: True",
    )

    exclude_params_branch = {
        "job_cpus", "job_memory", "job_walltime", "slurm_account", "htcondor_accounting_group",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_expected_address()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each task's own ``run()`` so ``--fail-branches`` can make a branch fail."""
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is None or getattr(run, "_hsbi_fail_hook", False):
            return

        @functools.wraps(run)
        def wrapped(self: HSBIRemoteWorkflow, *args: Any, **kw: Any) -> Any:
            if self.is_branch() and self.branch in set(self.fail_branches):
                raise BranchFailure(
                    f"{self.task_family} branch {self.branch} failed on purpose (--fail-branches)"
                )
            return run(self, *args, **kw)

        wrapped._hsbi_fail_hook = True  # type: ignore[attr-defined]
        cls.run = wrapped

    # -- resources ----------------------------------------------------------------------------

    def _resource(self, name: str, config_key: str | None = None) -> Any:
        value = getattr(self, name, None)
        if value in (None, _NO_STR, _NO_INT, ""):
            value = job_config(config_key or name.replace("job_", ""))
        return value

    def job_resources(self) -> dict[str, Any]:
        """cpus (int), gpus (int), memory_mb (int), walltime_s (int) and accounts, from params and
        law.cfg."""
        cpus, memory, walltime, gpus = (
            self._resource(n) for n in ("job_cpus", "job_memory", "job_walltime", "job_gpus")
        )
        return {
            "cpus": int(cpus) if cpus not in (None, "") else None,
            "gpus": int(gpus) if gpus not in (None, "") else 0,
            "memory_mb": _memory_mb(memory) if memory else None,
            "walltime_s": _seconds(walltime) if walltime else None,
            "slurm_account": self._resource("slurm_account", "slurm_account"),
            "htcondor_accounting_group": self._resource(
                "htcondor_accounting_group", "htcondor_accounting_group"
            ),
        }

    # -- directories and the bootstrap ---------------------------------------------------------

    def job_directory(self, workflow_type: str) -> Path:
        """``<jobs root>/<Task>/<key>/<workflow type>``, the key hashing the first branch's address
        and the store: stable across re-runs of the same workflow on the same store, so law finds
        its previous submission and resumes it (or cancels its jobs). Not the workflow's own
        address: with --cancel-jobs law drops the workflow's requirements, which enter it."""
        first = min(self.get_branch_map(), default=None)
        address = self.as_branch(first).address if first is not None else "empty"
        ident = f"{self.task_family}:{address}:{self._store_url()}"
        key = hashlib.sha256(ident.encode()).hexdigest()[:16]
        path = jobs_root() / self.task_family / key / workflow_type
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _store_url(self) -> str:
        return str(getattr(self.store, "url", None) or os.environ.get("HSBI_STORE", ""))

    def _image(self) -> str | None:
        image = job_config("image")
        return str(Path(image).expanduser().resolve()) if image else None

    def _write_bootstrap(self, workflow_type: str) -> law.JobInputFile:
        store = self._store_url()
        image = self._image()
        pythonpath = os.pathsep.join(
            p for p in [str(BASE), os.environ.get("PYTHONPATH", "")] if p
        ) if not image else "/opt/hsbi"
        activate = _ACTIVATE_IMAGE if image else _ACTIVATE_VENV.format(
            venv=shlex.quote(str(Path(os.environ.get("VIRTUAL_ENV") or BASE / ".venv")))
        )
        law_config = os.environ.get("LAW_CONFIG_FILE") or str(BASE / "law.cfg")
        text = _BOOTSTRAP.format(
            base=shlex.quote("/opt/hsbi" if image else str(BASE)),
            store=shlex.quote(store),
            law_config=shlex.quote("/opt/hsbi/law.cfg" if image else law_config),
            job_dir=shlex.quote(str(jobs_root())),
            pythonpath=shlex.quote(pythonpath),
            activate=activate,
            expected=shlex.quote(str(self._write_expected_addresses(workflow_type))),
        )
        path = self.job_directory(workflow_type) / "bootstrap.sh"
        path.write_text(text)
        # copied into each job's submission directory, rendered by nobody
        return law.JobInputFile(str(path), copy=True, share=True, render=False)

    def _write_expected_addresses(self, workflow_type: str) -> Path:
        """``addresses.json`` next to the job files: every branch's address as computed here."""
        path = self.job_directory(workflow_type) / "addresses.json"
        if getattr(self, "_hsbi_expected_written", None) != path:
            addresses = {str(b): t.address for b, t in self.get_branch_tasks().items()}
            path.write_text(json.dumps({"family": self.task_family, "addresses": addresses}))
            self._hsbi_expected_written = path
        return path

    def _check_expected_address(self) -> None:
        """In a job: stop when this branch's address differs from the one computed at submission
        (the code, the config file or the package versions changed in between), before luigi
        would rebuild inputs at other addresses. Outside jobs nothing is checked."""
        path = os.environ.get("HSBI_EXPECTED_ADDRESSES")
        if not path or not self.is_branch() or not os.path.exists(path):
            return
        expected = json.loads(Path(path).read_text())
        if expected.get("family") != self.task_family:
            return
        want = expected.get("addresses", {}).get(str(self.branch))
        if want and want != self.address:
            raise AddressMismatch(
                f"{self.task_family} branch {self.branch}: address {self.address} in the job, "
                f"{want} at submission; the code or the config changed after submitting (or the "
                "image differs from the checkout); run `law run` again to submit anew"
            )

    def _write_wrapper(self, workflow_type: str) -> law.JobInputFile | None:
        image = self._image()
        if not image:
            return None
        store = self._store_url()
        paths = [p for p in (store, str(jobs_root())) if p and "://" not in p]  # local paths only
        binds = ",".join(shlex.quote(p) for p in dict.fromkeys(paths))
        text = _WRAPPER.format(
            apptainer=shlex.quote(job_config("apptainer", "apptainer")),
            binds=binds,
            image=shlex.quote(image),
        )
        path = self.job_directory(workflow_type) / "apptainer_wrapper.sh"
        path.write_text(text)
        path.chmod(0o755)
        # copied and rendered per job: {{job_file}} becomes the job's own law job script
        return law.JobInputFile(str(path), copy=True, share=False, postfix=True, render_local=True)

    def job_cmdline_args(self) -> dict[str, str]:
        """Arguments overwritten in the jobs' ``law run`` command: a relative ``--config`` path
        becomes absolute (jobs start in another directory; the address does not change, it hashes
        the config's content)."""
        config = getattr(self, "config", None)
        if config and config != "default" and os.path.exists(config) and not os.path.isabs(config):
            return {"--config": os.path.abspath(config)}
        return {}

    # -- failure report -------------------------------------------------------------------------

    def report_failed_jobs(self) -> list[str]:
        """One line per failed job: task, branch (with its data), job id, attempts, log file."""
        proxy = self.workflow_proxy
        jobs = getattr(proxy, "job_data", None)
        lines = []
        if not jobs:
            return lines
        branch_map = self.get_branch_map()
        for job_num, data in sorted(jobs.jobs.items()):
            if data.get("status") != "failed":
                continue
            attempts = jobs.attempts.get(job_num, 0) + 1
            log = (data.get("extra") or {}).get("log") or "(no log)"
            for branch in data.get("branches", []):
                what = ", ".join(f"{k}={v}" for k, v in dict(branch_map.get(branch, {})).items())
                lines.append(
                    f"hsbi: error: {self.task_family} branch {branch} ({what}) failed as "
                    f"{proxy.workflow_type} job {data.get('job_id')} after {attempts} attempt(s); "
                    f"log: {log}"
                )
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        return lines

    def _post_poll(self, success: bool, duration: float) -> None:
        if not success:
            self.report_failed_jobs()

    # -- SLURM ----------------------------------------------------------------------------------

    def slurm_output_directory(self) -> law.LocalDirectoryTarget:
        return law.LocalDirectoryTarget(str(self.job_directory("slurm")))

    def slurm_bootstrap_file(self) -> law.JobInputFile:
        return self._write_bootstrap("slurm")

    def slurm_wrapper_file(self) -> law.JobInputFile | None:
        return self._write_wrapper("slurm")

    def slurm_create_job_file_factory(self, **kwargs: Any):
        kwargs.setdefault("dir", str(self.job_directory("slurm") / "files"))
        kwargs.setdefault("mkdtemp", True)
        return super().slurm_create_job_file_factory(**kwargs)

    def slurm_job_config(self, config, job_num, branches):
        res = self.job_resources()
        if res["cpus"]:
            config.custom_content.append(("cpus-per-task", res["cpus"]))
        if res["gpus"]:
            config.custom_content.append(("gres", f"gpu:{res['gpus']}"))
        if res["memory_mb"]:
            config.custom_content.append(("mem", f"{res['memory_mb']}M"))
        if res["walltime_s"]:
            config.custom_content.append(("time", max(1, -(-res["walltime_s"] // 60))))
        if res["slurm_account"]:
            config.custom_content.append(("account", res["slurm_account"]))
        if not getattr(config, "partition", None):  # --slurm-partition wins (law sets it)
            partition = job_config("slurm_partition")
            if partition:
                config.partition = partition
        return config

    def slurm_cmdline_args(self) -> dict[str, str]:
        return self.job_cmdline_args()

    def slurm_post_poll_callback(self, success: bool, duration: float) -> None:
        self._post_poll(success, duration)

    # -- HTCondor -------------------------------------------------------------------------------

    def htcondor_output_directory(self) -> law.LocalDirectoryTarget:
        return law.LocalDirectoryTarget(str(self.job_directory("htcondor")))

    def htcondor_bootstrap_file(self) -> law.JobInputFile:
        return self._write_bootstrap("htcondor")

    def htcondor_wrapper_file(self) -> law.JobInputFile | None:
        return self._write_wrapper("htcondor")

    def htcondor_create_job_file_factory(self, **kwargs: Any):
        kwargs.setdefault("dir", str(self.job_directory("htcondor") / "files"))
        kwargs.setdefault("mkdtemp", True)
        return super().htcondor_create_job_file_factory(**kwargs)

    def htcondor_job_config(self, config, job_num, branches):
        res = self.job_resources()
        if res["cpus"]:
            config.custom_content.append(("request_cpus", res["cpus"]))
        if res["gpus"]:
            config.custom_content.append(("request_gpus", res["gpus"]))
        if res["memory_mb"]:
            config.custom_content.append(("request_memory", res["memory_mb"]))
        if res["walltime_s"]:
            config.custom_content.append(("+MaxRuntime", res["walltime_s"]))
        if res["htcondor_accounting_group"]:
            config.custom_content.append(("accounting_group", res["htcondor_accounting_group"]))
        return config

    def htcondor_cmdline_args(self) -> dict[str, str]:
        return self.job_cmdline_args()

    def htcondor_post_poll_callback(self, success: bool, duration: float) -> None:
        self._post_poll(success, duration)
