"""Where `main` runs its independent jobs: one after another here (`local`), or side by
side as Ray tasks on a local Ray instance or the cluster at RAY_ADDRESS (`ray`).

Local: each job is `mlflow run` of the project's entry point, a child run of the active main
run (MLflow's multistep workflow). Ray: the main process creates each job's child run first
(with the tags `mlflow run` gives: entry point, source, user, parent) and a Ray task runs the
entry point's command in that run (`MLFLOW_RUN_ID`, as `mlflow run` hands a run over), so a
job is the same MLflow child run whichever executor ran it. A task that fails, or whose
worker or node dies, is retried by Ray up to MAX_RETRIES times; a retry continues the same
run from its checkpoint (`resume`) rather than starting another. A step that refused its
input (its one `error:` line, exit 2: a bad setting, device or data) would refuse it again:
it fails once, never retried; a tracking server that did not answer (exit 3) is retried.
The tracking settings reach the tasks through Ray's runtime_env. Ray is imported only here
(the `ray` extra).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from pipeline import cli, config, interrupts, tracking
from pipeline.errors import UserError

MAX_RETRIES = 2  # attempts after the first, for a failed job or a dead worker or node
# Environment a job needs, sent to Ray tasks through runtime_env (never a shared shell).
FORWARDED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "FMB_DATA_DIR",
    "FMB_MLRUNS_DIR",
    "FASHION_MNIST_DIR",
)


class JobError(Exception):
    """A job's step exited non-zero; the message is the last line it wrote on stderr."""


class JobFailed(JobError):
    """A crash, a kill, a lost node, a server that did not answer: Ray retries it
    (MAX_RETRIES)."""


class JobRefused(JobError):
    """The step refused its input (exit 2, one `error:` line): retrying cannot help."""


@dataclass(frozen=True)
class Launch:
    """One job to run: its entry point, `-P` values, the run to use (None: a new one) and
    whether it trains a torch model (it then asks for a GPU share where there are GPUs)."""

    entry: str
    params: dict[str, str]
    run_id: str | None = None
    torch: bool = False


@dataclass(frozen=True)
class Outcome:
    run_id: str | None
    error: str | None = None


class Local:
    """One job at a time, each an `mlflow run` child of the active main run."""

    def __init__(self, settings: config.MainSettings):
        self.settings = settings

    def bind(self, experiment_id: str, main_run_id: str) -> None:
        """The main run the jobs belong to (known once it has started)."""
        self.experiment_id, self.main_run_id = experiment_id, main_run_id

    def map(self, launches: list[Launch]) -> list[Outcome]:
        out = []
        for job in launches:
            try:
                run_id = tracking.run_entry_point(
                    job.entry, job.params, self.settings.env_manager, self.experiment_id, job.run_id
                )
                out.append(Outcome(run_id))
            except UserError as exc:
                out.append(Outcome(job.run_id, str(exc)))
        return out

    def check_device(self, name: str) -> None:
        """A job's `device` this machine cannot give: ValueError now, not in its child run."""
        from pipeline import engine

        engine.select_device(name)

    def close(self) -> None:
        pass


def check_ray_address(address: str) -> None:
    """An unreachable cluster is one line now, not a long wait inside ray.init."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address in ("auto", "local") or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"the Ray cluster at RAY_ADDRESS={address} is unreachable ({exc.strerror or exc});"
            " start it (`ray start --head`) or unset RAY_ADDRESS for a local Ray instance"
        ) from None


def connect(workers: int):
    """ray, initialised: the cluster at RAY_ADDRESS, else a local instance."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "executor=ray needs Ray: pip install -e '.[ray]' (or executor=local)"
        ) from None
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
    # ray.init puts its own SIGTERM handler in place (a stack dump, then abort: exit 134, the
    # main run FAILED and its jobs' runs left RUNNING); the step's own handlers come back, so
    # SIGTERM stops `main` as Ctrl-C does and close() cancels the jobs, which end KILLED
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or None, include_dashboard=False, log_to_driver=False)
    except SystemExit as exc:  # Ray's handler, meanwhile: SIGTERM is sys.exit(15)
        if exc.code != signal.SIGTERM:
            raise
        raise KeyboardInterrupt from None  # as a SIGTERM at any other moment: exit 130
    except Exception as exc:
        raise UserError(f"cannot start or join Ray ({type(exc).__name__}: {exc})") from None
    finally:
        for sig, handler in handlers.items():
            if handler is not None:  # None: not set from Python, nothing to restore
                signal.signal(sig, handler)
    return ray


def job_env() -> dict[str, str]:
    """What a Ray task's process needs: the store, the data, this Python on PATH."""
    env = {k: os.environ[k] for k in FORWARDED if k in os.environ}
    env["MLFLOW_EXPERIMENT_ID"] = tracking.ensure_experiment()
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


class Ray(Local):
    """Jobs side by side as Ray tasks, at most `workers` at once. Connects when made, so a
    missing Ray or an unreachable cluster is one line before any run starts."""

    def __init__(self, settings: config.MainSettings):
        super().__init__(settings)
        self.ray = connect(settings.workers)
        resources = self.ray.cluster_resources()
        self.gpus = float(resources.get("GPU", 0))
        offered = (
            int(self.gpus / settings.gpus_per_job) if self.gpus else int(resources.get("CPU", 1))
        )
        self.workers = settings.workers or max(1, offered)
        self.pending: dict = {}  # task ref -> its run, while it runs

    def bind(self, experiment_id: str, main_run_id: str) -> None:
        super().bind(experiment_id, main_run_id)
        self.env = job_env()

    def check_device(self, name: str) -> None:
        """The tasks run on the cluster's nodes, not here: cuda needs GPUs in the cluster
        (mps is left to the task, whose node Ray picks)."""
        if name == "cuda" and not self.gpus:
            raise ValueError(
                "device=cuda but the Ray cluster offers no GPU; use device=auto or cpu"
            )

    def options(self, job: Launch) -> dict:
        """Resources: a GPU share for a torch job where there are GPUs, else one core and
        one torch thread (two jobs on two cores must not both start two threads)."""
        env = dict(self.env)
        if job.torch and self.gpus:
            resources = {"num_gpus": self.settings.gpus_per_job, "num_cpus": 1}
        else:
            resources = {"num_cpus": 1}
            env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return {
            **resources,
            "max_retries": MAX_RETRIES,
            "retry_exceptions": [JobFailed],  # not JobRefused: it would refuse again
            "runtime_env": {"env_vars": env},
        }

    def map(self, launches: list[Launch]) -> list[Outcome]:
        remote = self.ray.remote(run_job)
        refs, results = {}, {}
        queue = list(enumerate(launches))
        while queue or refs:
            while queue and len(refs) < self.workers:  # each run is made when its job starts
                index, job = queue.pop(0)
                # a Ctrl-C waits until the run is made, submitted and pending, so close()
                # cancels the task and ends its run KILLED (it stayed RUNNING)
                with interrupts.deferred():
                    run_id = job.run_id or tracking.project_child_run(
                        self.main_run_id, job.entry, job.params
                    )
                    args = (job.entry, job.params, run_id, self.main_run_id)
                    ref = remote.options(**self.options(job)).remote(*args)
                    refs[ref] = (index, run_id)
                    self.pending[ref] = run_id
            done, _ = self.ray.wait(list(refs), num_returns=1)
            for ref in done:
                index, run_id = refs.pop(ref)
                self.pending.pop(ref, None)
                try:
                    results[index] = Outcome(self.ray.get(ref))
                except Exception as exc:  # after the last retry
                    why = f"{launches[index].entry} run {run_id}: {reason(exc)}"
                    # a step that failed before it started leaves the run made for it
                    # RUNNING (the next step's stale check would call it KILLED)
                    tracking.close_run(run_id, "FAILED", {"error": why[:5000]})
                    results[index] = Outcome(run_id, why)
        self.pending = {}
        return [results[i] for i in range(len(launches))]

    def close(self) -> None:
        """Cancel what still runs: its steps get SIGTERM and end their runs KILLED. A run
        whose step had not yet started (its run is made before the task starts), or had not
        yet put its handlers in place, is ended KILLED here, so none is left RUNNING (a
        second Ctrl-C waits until they are)."""
        with interrupts.held():
            for ref in self.pending:
                with contextlib.suppress(Exception):  # finished already
                    self.ray.cancel(ref, force=True)
            self.ray.shutdown()
            for run_id in self.pending.values():
                tracking.close_run(run_id, "KILLED", {"error": "main was stopped while it ran"})


def reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the task's own exception
    if isinstance(cause, JobError):
        return str(cause).removeprefix("error: ")[:300]
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


EXECUTORS = {"local": Local, "ray": Ray}


# --- inside a Ray task ------------------------------------------------------------------


def die_with_parent() -> None:
    """In the job's process: SIGTERM when the Ray worker that started it dies, so a
    cancelled or killed task never leaves its step running (Linux prctl)."""
    import ctypes

    with contextlib.suppress(OSError):  # not Linux: no such guard
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_job(entry: str, params: dict[str, str], run_id: str, main_run_id: str) -> str:
    """The entry point's command in run `run_id` (a retry continues from the checkpoint);
    returns the run id; raises JobFailed on failure so that Ray retries it, JobRefused when
    the step refused its input (never retried)."""
    if entry == "train":
        run_id, params = resume_or_restart(run_id, params, main_run_id)
    argv = [sys.executable, "-m", "pipeline", entry, *(f"--{k}={v}" for k, v in params.items())]
    env = {**os.environ, "MLFLOW_RUN_ID": run_id}
    done = subprocess.run(
        argv, cwd=config.ROOT, env=env, preexec_fn=die_with_parent, capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        error = JobRefused if done.returncode == cli.REFUSED else JobFailed
        raise error(lines[-1] if lines else f"{entry} exited with {done.returncode}")
    return run_id


def resume_or_restart(run_id: str, params: dict[str, str], main_run_id: str):
    """A train run that was started before: resumed from its checkpoint when this machine
    has it; started anew in a fresh run when epochs were logged but the checkpoint is on
    another node (so that no epoch is logged twice)."""
    if config.checkpoint_path(run_id).is_file():
        return run_id, {**params, "resume": "true"}
    if tracking.metric_steps(run_id, "val_accuracy"):
        fresh = tracking.project_child_run(main_run_id, "train", params)
        tracking.close_run(run_id, "FAILED", {"error": f"retried as run {fresh} on another node"})
        return fresh, params
    return run_id, params
