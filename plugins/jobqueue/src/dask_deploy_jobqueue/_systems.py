"""What differs between batch systems: directives, commands and how to read their output.

Each :class:`System` is a stateless description. It writes the header of a job script for a
:class:`JobRequest` (one job, or an array of ``count`` elements), builds the command lines
that submit, query, stop and list jobs, and parses what those commands print into the
core's phases. The backend (:mod:`._backend`) runs the commands; nothing here does I/O, so
every system's behaviour is tested against recorded command output.

Element ids are the system's own names for one job or one array element, so that a user
can paste them into its commands: SLURM ``123_4``, PBS ``123[4].server``, SGE ``123.4``,
LSF ``123[4]``, HTCondor ``123.3``, Moab ``123[4]``, OAR the element's own job id.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from dask_deploy import BackendError, Phase

from ._options import JobqueueOptions, check_directive, check_log_directory

__all__ = ["SYSTEMS", "JobRequest", "Listed", "System"]

#: Every job of a cluster is named ``dask-deploy.<cluster>.<role>`` (role: worker or
#: scheduler), which is how ``deploy_discover`` and ``dask-deploy gc`` find them.
NAME_PREFIX = "dask-deploy."


#: A directive value made only of these is written as it is; anything else is quoted for
#: the system's own parser (to bash, every directive line is a comment).
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./~$[\]-]+\Z")


def job_name(cluster: str, role: str) -> str:
    return f"{NAME_PREFIX}{cluster}.{role}"


def parse_job_name(name: str) -> tuple[str, str] | None:
    """``(cluster, role)`` of one of our job names (LSF appends ``[1-4]``), else None."""
    name = re.sub(r"\[[^\]]*\]$", "", name.strip())
    if not name.startswith(NAME_PREFIX):
        return None
    cluster, _, role = name[len(NAME_PREFIX):].rpartition(".")
    return (cluster, role) if cluster and role in ("worker", "scheduler") else None


@dataclass(frozen=True)
class JobRequest:
    """One submission: a plain job (``count == 1``) or an array of ``count`` elements."""

    name: str
    log_dir: str
    count: int
    cores: int
    memory: int | None
    walltime: str | None
    options: JobqueueOptions


@dataclass(frozen=True)
class Listed:
    """One job element as a listing command shows it."""

    element: str
    name: str
    phase: Phase
    reason: str = ""
    #: The job's user where the listing names it and may hold other users' jobs.
    owner: str = ""


def _mib(n: int) -> int:
    return max(1, math.ceil(n / 2**20))


def _ranges(spec: str) -> list[int]:
    """``"2-8:2,10"`` -> [2, 4, 6, 8, 10] (SGE task ranges)."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part.strip())
        if m:
            lo = int(m.group(1))
            hi = int(m.group(2) or lo)
            out.extend(range(lo, hi + 1, int(m.group(3) or 1)))
    return out


class System:
    """Base class: the parts every batch system has, overridden where they differ."""

    name = ""
    directive = ""
    #: Shell expression of the array element's index inside the job.
    index_var = ""
    #: Index of the first array element (the job script maps index -> unit).
    first_index = 1
    #: How one-colon walltimes read (see :func:`~._options.parse_walltime`).
    walltime_colon = "minutes:seconds"
    #: Whether many units may share one submission (a job array).
    arrays = True
    #: Whether the submit command runs in the log folder (else where the client runs,
    #: which is also where SLURM, for one, starts the job).
    submit_in_log_dir = False
    #: Whether the submit command reads the script from stdin instead of a path argument.
    submit_stdin = False
    #: The command that must be on PATH (named in the error when it is missing).
    submit_binary = ""
    #: What the status command prints on stderr for a job it no longer knows, when it then
    #: exits non-zero although it answered for the others (PBS qstat, LSF bjobs).
    unknown_job_markers: tuple[str, ...] = ()
    #: The submit command; the script's path follows unless ``submit_stdin`` (as
    #: dask-jobqueue's ``submit_command``).
    submit_argv: tuple[str, ...] = ()
    #: Group 1 is the job id in the submit command's output (``job_id_regexp``).
    job_id_regexp = ""
    #: The forceful stop; element ids follow (``cancel_command``).
    cancel_argv: tuple[str, ...] = ()
    #: Signals the job script takes as "stop gracefully" (forwarded once to the workers).
    stop_signals: tuple[str, ...] = ("TERM", "INT")
    #: The id of array element ``index`` of job ``job`` (a plain job's id is the job's).
    element_format = ""

    def header(self, req: JobRequest) -> list[str]:
        lines = self.directives(req)
        lines = [line for line in lines
                 if not any(skip in line for skip in req.options.job_directives_skip)]
        # The system's own syntax, written as given (may hold several words), on its own line.
        lines += [f"{self.directive} {check_directive(d, 'job_extra_directives')}"
                  for d in req.options.job_extra_directives]
        return lines

    def directives(self, req: JobRequest) -> list[str]:
        raise NotImplementedError

    def word(self, req: JobRequest, value: str, option: str) -> str:
        """``value`` as one word of a directive line: refused when it could end the line
        (:func:`~._options.check_directive`), quoted unless it is plain."""
        check_directive(value, option, req.options.directive_unquotable)
        return value if _PLAIN.match(value) else self.quote(value)

    def quote(self, value: str) -> str:
        return f'"{value}"'  # check_directive refused '"' and '\\' (no escapes here)

    def log_dir(self, req: JobRequest) -> str:
        """The output directory, checked here too: it may come from the Dask config."""
        check_directive(req.log_dir, "log_directory", req.options.directive_unquotable)
        return check_log_directory(req.log_dir, req.options.log_dir_special)

    def prologue(self) -> list[str]:
        """Shell lines that must come first in the body (after the header)."""
        return []

    def submit_command(self, script: str) -> list[str]:
        return [*self.submit_argv] if self.submit_stdin else [*self.submit_argv, script]

    def submit_command_for(self, req: JobRequest, script: str) -> list[str]:
        """The submit command for ``req`` (run in the log folder)."""
        return self.submit_command(script)

    def parse_submit(self, out: str) -> str:
        m = re.search(self.job_id_regexp, out.strip(), re.M)
        if not m:
            raise BackendError(f"could not read a job id from {self.submit_argv[0]}'s output: "
                               f"{out!r}")
        return m.group(1)

    def element_ids(self, job_id: str, count: int) -> list[str]:
        if count == 1:
            return [job_id]
        return [self.element_format.format(job=job_id, index=i)
                for i in range(self.first_index, self.first_index + count)]

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        raise NotImplementedError

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def partial_answer(self, out: str, err: str) -> bool:
        """Whether a non-zero exit of the status command is only about forgotten jobs."""
        return bool(self.unknown_job_markers) and any(m in err for m in self.unknown_job_markers)

    def parse_status(self, out: str) -> dict[str, tuple[Phase, str]]:
        return {j.element: (j.phase, j.reason) for j in self.parse_listing(out)}

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        """Graceful: the job's shell gets SIGTERM and lets the workers leave, exit 0."""
        raise NotImplementedError

    def kill_commands(self, ids: Sequence[str]) -> list[list[str]]:
        return [[*self.cancel_argv, *ids]]

    def list_command(self, user: str) -> list[str]:
        raise NotImplementedError

    def parse_listing(self, out: str) -> list[Listed]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------
# SLURM (tested against a real slurmctld)
# --------------------------------------------------------------------------------------

_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_SLURM_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                  "RESV_DEL_HOLD", "SPECIAL_EXIT", "SUSPENDED", "STOPPED"}
#: Pending reasons that never resolve by waiting: the job is refused, so it failed.
_SLURM_HOPELESS = {"BadConstraints", "InvalidAccount", "InvalidQOS", "PartitionTimeLimit",
                   "PartitionNodeLimit", "DependencyNeverSatisfied", "QOSMaxWallDurationPerJobLimit",
                   "AccountNotAllowed"}


class Slurm(System):
    name = "slurm"
    directive = "#SBATCH"
    index_var = "${SLURM_ARRAY_TASK_ID}"
    submit_binary = "sbatch"
    submit_argv = ("sbatch", "--parsable")
    job_id_regexp = r"^(\d+)(;.*)?$"
    cancel_argv = ("scancel",)
    element_format = "{job}_{index}"

    def quote(self, value: str) -> str:
        # sbatch reads "..." and backslash escapes in #SBATCH lines (also inside quotes).
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def directives(self, req: JobRequest) -> list[str]:
        o = req.options
        d = self.directive
        array = req.count > 1
        output = self.log_dir(req).replace("%", "%%") + ("/%A_%a.out" if array else "/%j.out")
        lines = [f"{d} --job-name={self.word(req, req.name, 'name')}",
                 f"{d} --output={self.word(req, output, 'log_directory')}"]
        if array:
            lines.append(f"{d} --array={self.first_index}-{self.first_index + req.count - 1}")
        if o.queue:
            lines.append(f"{d} --partition={self.word(req, o.queue, 'queue')}")
        if o.account:
            lines.append(f"{d} --account={self.word(req, o.account, 'account')}")
        lines += [f"{d} --ntasks=1", f"{d} --cpus-per-task={getattr(o, 'job_cpu', None) or req.cores}"]
        mem = getattr(o, "job_mem", None)
        if mem or req.memory:
            from dask.utils import parse_bytes

            lines.append(f"{d} --mem={_mib(parse_bytes(mem) if mem else req.memory or 0)}M")
        if req.walltime:
            lines.append(f"{d} --time={self.word(req, req.walltime, 'walltime')}")
        return lines

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        return [f"{req.log_dir}/{e}.out" for e in self.element_ids(job_id, req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        # By name, not by id: squeue refuses a whole query when one id has been purged.
        return ["squeue", "--noheader", "--array", "--states=all", f"--name={name}",
                "--format=%i|%T|%r|%j"]

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        # Pending elements never ran: cancel them. Running ones: SIGTERM to the batch shell
        # only (--batch); its trap forwards it once to each worker, which then leaves, and
        # the job ends with exit code 0, i.e. COMPLETED instead of CANCELLED.
        return [["scancel", "--state=PENDING", *ids],
                ["scancel", "--batch", "--signal=TERM", "--state=RUNNING", *ids]]

    def list_command(self, user: str) -> list[str]:
        return ["squeue", "--noheader", "--array", f"--user={user}", "--format=%i|%T|%r|%j"]

    def parse_listing(self, out: str) -> list[Listed]:
        jobs = []
        for line in out.splitlines():
            parts = line.strip().split("|", 3)
            if len(parts) != 4:
                continue
            element, state, why, name = parts
            state = state.split()[0] if state else ""
            reason = f"{state} ({why})" if why not in ("", "None") else state
            if state in _SLURM_RUNNING:
                phase, reason = Phase.RUNNING, ""
            elif state in _SLURM_PENDING:
                hopeless = state == "PENDING" and why in _SLURM_HOPELESS
                phase = Phase.FAILED if hopeless else Phase.PENDING
            elif state == "COMPLETED":
                phase, reason = Phase.GONE, ""
            else:  # FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, ...
                phase = Phase.FAILED
            jobs.append(Listed(element, name, phase, reason))
        return jobs


# --------------------------------------------------------------------------------------
# PBS Pro / OpenPBS (recorded output)
# --------------------------------------------------------------------------------------

_PBS_PHASE = {"Q": Phase.PENDING, "H": Phase.PENDING, "W": Phase.PENDING, "T": Phase.PENDING,
              "S": Phase.PENDING, "U": Phase.PENDING, "M": Phase.PENDING,
              "R": Phase.RUNNING, "E": Phase.RUNNING, "B": Phase.RUNNING,
              "F": Phase.GONE, "X": Phase.GONE}


class PBS(System):
    name = "pbs"
    directive = "#PBS"
    index_var = "${PBS_ARRAY_INDEX}"
    submit_binary = "qsub"
    submit_argv: tuple[str, ...] = ("qsub",)
    job_id_regexp = r"^(\d+(?:\[\])?(?:\.\S+)?)$"
    cancel_argv: tuple[str, ...] = ("qdel", "-W", "force")
    unknown_job_markers: tuple[str, ...] = ("Unknown Job Id", "Job has finished")

    def directives(self, req: JobRequest) -> list[str]:
        o = req.options
        d = self.directive
        lines = [f"{d} -N {self.word(req, req.name, 'name')}", f"{d} -j oe",
                 f"{d} -o {self.word(req, self.log_dir(req) + '/', 'log_directory')}"]
        if req.count > 1:
            lines.append(f"{d} -J {self.first_index}-{self.first_index + req.count - 1}")
        if o.queue:
            lines.append(f"{d} -q {self.word(req, o.queue, 'queue')}")
        if o.account:
            lines.append(f"{d} -A {self.word(req, o.account, 'account')}")
        spec = getattr(o, "resource_spec", None)
        if not spec:
            spec = f"select=1:ncpus={req.cores}" + (f":mem={_mib(req.memory)}MB" if req.memory else "")
        lines.append(f"{d} -l {self.word(req, spec, 'resource_spec')}")
        if req.walltime:
            lines.append(f"{d} -l walltime={self.word(req, req.walltime, 'walltime')}")
        return lines

    def element_ids(self, job_id: str, count: int) -> list[str]:
        if count == 1:
            return [job_id]
        seq, _, server = job_id.partition(".")
        seq = seq.removesuffix("[]")
        tail = f".{server}" if server else ""
        return [f"{seq}[{i}]{tail}" for i in range(self.first_index, self.first_index + count)]

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        # With -o naming a directory, PBS writes <job name>.o<sequence>[.<index>] there.
        seq = re.match(r"\d+", job_id)
        assert seq is not None
        if req.count == 1:
            return [f"{req.log_dir}/{req.name}.o{seq.group()}"]
        return [f"{req.log_dir}/{req.name}.o{seq.group()}.{i}"
                for i in range(self.first_index, self.first_index + req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        arrays = sorted({re.sub(r"\[\d+\]", "[]", j) for j in job_ids})
        return ["qstat", "-f", "-F", "json", "-x", "-t", *arrays]

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        # qdel sends SIGTERM, waits -W seconds, then SIGKILL.
        return [["qdel", "-W", str(max(1, math.ceil(grace))), *ids]]

    def list_command(self, user: str) -> list[str]:
        return ["qstat", "-f", "-F", "json", "-t", "-u", user]

    def parse_listing(self, out: str) -> list[Listed]:
        try:
            jobs = json.loads(out or "{}").get("Jobs", {}) or {}
        except ValueError as e:
            raise BackendError(f"qstat printed something that is not JSON: {out[:200]!r}") from e
        listed = []
        for element, attrs in jobs.items():
            if element.endswith("[]") or "[]." in element:
                continue  # the array itself; its subjobs are listed with -t
            state = attrs.get("job_state", "")
            phase = _PBS_PHASE.get(state, Phase.PENDING)
            reason = ""
            exit_status = attrs.get("Exit_status")
            if phase is Phase.GONE and exit_status not in (None, 0, "0"):
                phase, reason = Phase.FAILED, f"exit status {exit_status}"
            elif phase is Phase.PENDING:
                reason = str(attrs.get("comment", state))
            listed.append(Listed(element, attrs.get("Job_Name", ""), phase, reason))
        return listed


#: Torque's ``qstat -f`` states; C (completed) is read from ``exit_status`` or, where the
#: server gives none (SLURM's Torque wrappers), from the job's output file.
_TORQUE_PHASE = {"Q": Phase.PENDING, "H": Phase.PENDING, "W": Phase.PENDING, "T": Phase.PENDING,
                 "S": Phase.PENDING, "R": Phase.RUNNING, "E": Phase.RUNNING}


def parse_qstat_full(out: str) -> list[dict[str, str]]:
    """Torque's (and PBS's) ``qstat -f`` text: ``Job Id: <id>`` then ``key = value`` lines;
    a long value goes on in lines that hold no `` = ``. Each job as a dict with ``Job Id``."""
    jobs: list[dict[str, str]] = []
    key = ""
    for line in out.splitlines():
        if line.startswith("Job Id:"):
            jobs.append({"Job Id": line.partition(":")[2].strip()})
            key = ""
        elif jobs and " = " in line:
            key, _, value = line.strip().partition(" = ")
            jobs[-1][key] = value
        elif jobs and key and line.strip():
            jobs[-1][key] += line.strip()
    return jobs


class Torque(PBS):
    """A Torque-style PBS server (Torque itself, or SLURM's ``slurm-wlm-torque`` wrappers):
    the ``pbs`` backend switches to this when ``qstat --version`` names no ``pbs_version``.

    Its ``qstat`` has no JSON (``-F json``) and its ``-x`` means XML, so status is read from
    ``qstat -f`` text, and a completed job (``C``) from its ``exit_status`` or, where the
    server gives none, from its output file. Each unit is a job of its own (as in
    dask-jobqueue's ``PBSCluster``): the wrappers name array elements by SLURM's own job
    ids, which say nothing of their index. ``qdel`` takes no grace (Torque sends SIGTERM,
    then SIGKILL after its ``kill_delay``; the wrappers kill at once). ``-N`` and ``-j oe``
    are also given on qsub's command line, and qsub runs in the log folder, because the
    wrappers' qsub passes its own ``-o <name>.o<id>`` (relative to where it runs) over the
    script's ``#PBS -o``: the output file is then the same one a real Torque writes.
    """

    arrays = False
    submit_in_log_dir = True
    cancel_argv: tuple[str, ...] = ("qdel",)
    unknown_job_markers: tuple[str, ...] = ("Unknown Job Id",)

    def directives(self, req: JobRequest) -> list[str]:
        # Torque has no select=: its default resource request is nodes=1:ppn=<cores>
        # (SLURM's sbatch reads both in #PBS lines).
        lines = super().directives(req)
        if not getattr(req.options, "resource_spec", None):
            spec = f"nodes=1:ppn={req.cores}" + (f",mem={_mib(req.memory)}mb" if req.memory else "")
            lines = [f"{self.directive} -l {spec}" if line.startswith(f"{self.directive} -l select=")
                     else line for line in lines]
        return lines

    def submit_command_for(self, req: JobRequest, script: str) -> list[str]:
        return ["qsub", "-N", self.word(req, req.name, "name"), "-j", "oe", script]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-f", *job_ids]

    def partial_answer(self, out: str, err: str) -> bool:
        # The wrappers' qstat exits 153 with nothing on stderr when it knows none of the ids.
        return not err.strip() or super().partial_answer(out, err)

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        return [["qdel", *ids]]

    def list_command(self, user: str) -> list[str]:
        # Not -u: the wrappers' qstat then prints its one-line format (names cut at 20).
        return ["qstat", "-f"]

    def parse_listing(self, out: str) -> list[Listed]:
        listed = []
        for job in parse_qstat_full(out):
            state = job.get("job_state", "")
            exit_status = job.get("exit_status")
            if state == "C" and exit_status is None:
                continue  # not judged here: the backend reads the job's output file
            if state == "C":
                phase = Phase.GONE if exit_status == "0" else Phase.FAILED
                reason = "" if phase is Phase.GONE else f"exit status {exit_status}"
            else:
                phase = _TORQUE_PHASE.get(state, Phase.PENDING)
                reason = f"{state} ({job['comment']})" if "comment" in job else state
                reason = "" if phase is Phase.RUNNING else reason
            owner = job.get("Job_Owner", "").partition("@")[0]
            listed.append(Listed(job["Job Id"], job.get("Job_Name", ""), phase, reason, owner))
        return listed


#: The ``pbs`` backend's form for Torque-style servers (see :class:`Torque`).
TORQUE = Torque()


# --------------------------------------------------------------------------------------
# Grid Engine (recorded output)
# --------------------------------------------------------------------------------------


class SGE(System):
    name = "sge"
    directive = "#$"
    index_var = "${SGE_TASK_ID}"
    submit_binary = "qsub"
    submit_argv = ("qsub", "-terse")
    job_id_regexp = r"^(\d+)(?:\.\S+)?$"
    cancel_argv = ("qdel", "-f")
    element_format = "{job}.{index}"
    # qdel of a -notify job sends SIGUSR2, then SIGKILL after the queue's notify time.
    stop_signals = ("TERM", "INT", "USR2")

    def directives(self, req: JobRequest) -> list[str]:
        o = req.options
        d = self.directive
        # $TASK_ID only in arrays: a plain job's is "undefined" in some Grid Engines and
        # "0" in others (Son of Grid Engine 8.1.9, found on the live server).
        output = self.log_dir(req) + ("/$JOB_ID.$TASK_ID.out" if req.count > 1 else "/$JOB_ID.out")
        # -notify: qdel sends SIGUSR2 first and SIGKILL only after the queue's notify time,
        # so the script can stop its workers. Without it the SIGKILL reaches the job's
        # process group only, and the workers (each in a session of its own) would be
        # left running: found on the live Grid Engine.
        lines = [f"{d} -N {self.word(req, req.name, 'name')}", f"{d} -S /bin/bash", f"{d} -j y",
                 f"{d} -o {self.word(req, output, 'log_directory')}", f"{d} -cwd", f"{d} -notify"]
        if req.count > 1:
            lines.append(f"{d} -t {self.first_index}-{self.first_index + req.count - 1}")
        if o.queue:
            lines.append(f"{d} -q {self.word(req, o.queue, 'queue')}")
        project = getattr(o, "project", None)
        if project or o.account:
            option = "project" if project else "account"
            lines.append(f"{d} -P {self.word(req, project or o.account or '', option)}")
        spec = getattr(o, "resource_spec", None)
        if spec:
            lines.append(f"{d} -l {self.word(req, spec, 'resource_spec')}")
        if req.walltime:
            lines.append(f"{d} -l h_rt={self.word(req, req.walltime, 'walltime')}")
        return lines

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        if req.count == 1:
            return [f"{req.log_dir}/{job_id}.out"]
        return [f"{req.log_dir}/{e}.out" for e in self.element_ids(job_id, req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-xml"]  # this user's jobs; finished ones are read from their files

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        # Running jobs were submitted with -notify: SIGUSR2 (the script stops its workers
        # and exits 0), SIGKILL after the queue's notify time (default 60 s).
        return [["qdel", *ids]]

    def list_command(self, user: str) -> list[str]:
        return ["qstat", "-xml", "-u", user]

    def parse_listing(self, out: str) -> list[Listed]:
        try:
            root = ET.fromstring(out)
        except ET.ParseError as e:
            raise BackendError(f"qstat -xml printed something that is not XML: {out[:200]!r}") from e
        listed = []
        for job in root.iter("job_list"):
            number = job.findtext("JB_job_number", "")
            name = job.findtext("JB_name", "")
            state = job.findtext("state", "")
            tasks = job.findtext("tasks")
            if "E" in state:
                phase, reason = Phase.FAILED, f"error state {state} (qstat -j {number} -explain E)"
            elif "d" in state:
                phase, reason = Phase.RUNNING, ""  # being deleted: still there
            elif "r" in state or "t" in state:
                phase, reason = Phase.RUNNING, ""
            else:
                phase, reason = Phase.PENDING, state
            elements = [f"{number}.{i}" for i in _ranges(tasks)] if tasks else [number]
            listed += [Listed(e, name, phase, reason) for e in elements]
        return listed


# --------------------------------------------------------------------------------------
# LSF (recorded output)
# --------------------------------------------------------------------------------------

_LSF_PHASE = {"PEND": Phase.PENDING, "PSUSP": Phase.PENDING, "WAIT": Phase.PENDING,
              "RUN": Phase.RUNNING, "USUSP": Phase.RUNNING, "SSUSP": Phase.RUNNING,
              "PROV": Phase.PENDING, "DONE": Phase.GONE, "EXIT": Phase.FAILED,
              "UNKWN": Phase.FAILED, "ZOMBI": Phase.FAILED}
_LSF_FIELDS = "jobid stat exit_code jobindex job_name pend_reason"


class LSF(System):
    name = "lsf"
    directive = "#BSUB"
    index_var = "${LSB_JOBINDEX}"
    walltime_colon = "hours:minutes"
    submit_stdin = True  # bsub reads #BSUB lines only from a script on its stdin
    submit_binary = "bsub"
    submit_argv = ("bsub",)
    job_id_regexp = r"Job <(\d+)> is submitted"
    cancel_argv = ("bkill",)
    element_format = "{job}[{index}]"
    unknown_job_markers = ("is not found",)

    def directives(self, req: JobRequest) -> list[str]:
        o = req.options
        d = self.directive
        name = req.name
        if req.count > 1:
            name += f"[{self.first_index}-{self.first_index + req.count - 1}]"
        lines = [f"{d} -J {self.word(req, name, 'name')}",
                 f"{d} -o {self.word(req, self.log_dir(req) + '/%J.%I.out', 'log_directory')}"]
        if o.queue:
            lines.append(f"{d} -q {self.word(req, o.queue, 'queue')}")
        project = getattr(o, "project", None)
        if project or o.account:
            option = "project" if project else "account"
            lines.append(f"{d} -P {self.word(req, project or o.account or '', option)}")
        ncpus = getattr(o, "ncpus", None) or req.cores
        lines += [f"{d} -n {ncpus}", f'{d} -R "span[hosts=1]"']
        mem = getattr(o, "mem", None)
        from dask.utils import parse_bytes

        nbytes = (parse_bytes(mem) if isinstance(mem, str) else mem) or req.memory
        if nbytes:
            units = getattr(o, "lsf_units", "KB").upper()
            scale = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[units]
            amount = max(1, math.ceil(nbytes / scale))
            lines += [f"{d} -M {amount}", f'{d} -R "rusage[mem={amount}]"']
        if req.walltime:
            lines.append(f"{d} -W {self.word(req, req.walltime, 'walltime')}")
        return lines

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        if req.count == 1:
            return [f"{req.log_dir}/{job_id}.0.out"]  # %I is 0 outside arrays
        return [f"{req.log_dir}/{job_id}.{i}.out"
                for i in range(self.first_index, self.first_index + req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        arrays = sorted({re.sub(r"\[\d+\]$", "", j) for j in job_ids})
        return ["bjobs", "-a", "-noheader", "-o", f"{_LSF_FIELDS} delimiter='|'", *arrays]

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        return [["bkill", "-s", "TERM", *ids]]

    def list_command(self, user: str) -> list[str]:
        return ["bjobs", "-noheader", "-u", user, "-o", f"{_LSF_FIELDS} delimiter='|'"]

    def parse_listing(self, out: str) -> list[Listed]:
        listed = []
        for line in out.splitlines():
            parts = line.strip().split("|", 5)
            if len(parts) != 6 or not parts[0].isdigit():
                continue  # "Job <123> is not found" and the like
            jobid, stat, exit_code, index, name, pend = parts
            phase = _LSF_PHASE.get(stat, Phase.PENDING)
            element = f"{jobid}[{index}]" if index not in ("", "0", "-") else jobid
            reason = ""
            if phase is Phase.FAILED:
                reason = f"{stat} (exit code {exit_code})" if exit_code not in ("", "-") else stat
            elif phase is Phase.PENDING:
                reason = pend if pend not in ("", "-") else stat
            listed.append(Listed(element, name, phase, reason))
        return listed


# --------------------------------------------------------------------------------------
# HTCondor (recorded output)
# --------------------------------------------------------------------------------------

_CONDOR_PHASE = {"1": Phase.PENDING, "2": Phase.RUNNING, "3": Phase.GONE, "4": Phase.GONE,
                 "5": Phase.FAILED, "6": Phase.RUNNING, "7": Phase.PENDING}


class HTCondor(System):
    """HTCondor takes a submit description, not a script: :meth:`submit_description`."""

    name = "htcondor"
    directive = ""
    index_var = "${1}"  # the submit description passes $(Process) as the first argument
    first_index = 0
    submit_binary = "condor_submit"
    submit_argv = ("condor_submit",)
    job_id_regexp = r"submitted to cluster (\d+)"
    cancel_argv = ("condor_rm", "-forcex")

    def header(self, req: JobRequest) -> list[str]:
        return []  # the batch settings live in the submit description

    def prologue(self) -> list[str]:
        return ["exec 2>&1  # one output file per job, as on the other systems"]

    def submit_description(self, req: JobRequest, script: str) -> str:
        o = req.options
        # Values run to the end of their line: check_directive keeps each on its own line,
        # and "$" (a macro) is refused in the log directory, which holds the script too.
        log_dir = self.log_dir(req)
        name = check_directive(req.name, "name")
        lines = ["universe = vanilla", f"executable = {check_directive(script, 'log_directory')}",
                 "arguments = $(Process)", f'batch_name = "{name}"', f'+JobBatchName = "{name}"',
                 f"output = {log_dir}/$(Cluster).$(Process).out",
                 f"request_cpus = {req.cores}"]
        if req.memory:
            lines.append(f"request_memory = {_mib(req.memory)}")
        disk = getattr(o, "disk", None)
        if disk:
            from dask.utils import parse_bytes

            nbytes = parse_bytes(disk) if isinstance(disk, str) else disk
            lines.append(f"request_disk = {max(1, math.ceil(nbytes / 1024))}")
        lines = [line for line in lines if not any(s in line for s in o.job_directives_skip)]
        lines += [check_directive(line, "job_extra_directives") for line in o.job_extra_directives]
        lines.append(f"queue {req.count}")
        return "\n".join(lines) + "\n"

    def element_ids(self, job_id: str, count: int) -> list[str]:
        return [f"{job_id}.{i}" for i in range(count)]

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        return [f"{req.log_dir}/{e}.out" for e in self.element_ids(job_id, req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        clusters = sorted({j.split(".")[0] for j in job_ids})
        return ["condor_q", *clusters, "-af:j", "JobStatus", "ExitCode", "JobBatchName",
                "HoldReason"]

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        return [["condor_rm", *ids]]  # SIGTERM (the job's KillSig), SIGKILL later

    def list_command(self, user: str) -> list[str]:
        return ["condor_q", user, "-af:j", "JobStatus", "ExitCode", "JobBatchName", "HoldReason"]

    def parse_listing(self, out: str) -> list[Listed]:
        listed = []
        for line in out.splitlines():
            parts = line.split(None, 4)
            if len(parts) < 4 or not re.match(r"^\d+\.\d+$", parts[0]):
                continue
            element, status, exit_code, name = parts[:4]
            hold = parts[4] if len(parts) > 4 else "undefined"
            phase = _CONDOR_PHASE.get(status, Phase.PENDING)
            reason = ""
            if status == "5":
                reason = f"held: {hold}"
            elif status == "4" and exit_code not in ("0", "undefined"):
                phase, reason = Phase.FAILED, f"exit code {exit_code}"
            listed.append(Listed(element, name.strip('"'), phase, reason))
        return listed


# --------------------------------------------------------------------------------------
# Moab (documented output): PBS-style scripts, msub / showq / canceljob
# --------------------------------------------------------------------------------------

#: ``showq --xml`` job states (``State``) that mean the job holds resources.
_MOAB_RUNNING = {"Running", "Starting", "Suspended"}
_MOAB_ENDED = {"Completed", "Removed", "Vacated"}


class Moab(PBS):
    """Moab over Torque: the job script is PBS's (dask-jobqueue's ``MoabJob`` is a
    ``PBSJob`` submitted with ``msub``), arrays are ``msub -t name[1-N]``, status comes
    from ``showq --xml`` (active, eligible and blocked jobs; an ended job is read from
    its output file), and jobs are stopped with ``canceljob`` (Torque sends SIGTERM, then
    SIGKILL after its ``kill_delay``)."""

    name = "moab"
    # Moab sets MOAB_JOBARRAYINDEX; a Torque resource manager sets PBS_ARRAYID as well.
    index_var = "${MOAB_JOBARRAYINDEX:-${PBS_ARRAYID}}"
    submit_binary = "msub"
    submit_argv = ("msub",)
    #: msub prints the new job's id on a line of its own (``Moab.12`` or ``12``).
    job_id_regexp = r"^\s*(\S+)\s*\Z"
    cancel_argv: tuple[str, ...] = ("canceljob",)
    unknown_job_markers: tuple[str, ...] = ()

    def directives(self, req: JobRequest) -> list[str]:
        lines = [line for line in super().directives(req) if not line.startswith(f"{self.directive} -J ")]
        if req.count > 1:
            # msub names an array in its -t value: <name>[<first>-<last>]
            last = self.first_index + req.count - 1
            array = self.word(req, f"{req.name}[{self.first_index}-{last}]", "name")
            lines.insert(3, f"{self.directive} -t {array}")
        return lines

    def parse_submit(self, out: str) -> str:
        lines = [line.strip() for line in out.strip().splitlines() if line.strip()]
        if not lines or not re.match(r"^[A-Za-z0-9_.-]+(?:\[\])?$", lines[-1]):
            raise BackendError(f"could not read a job id from msub's output: {out!r}")
        return lines[-1]

    def element_ids(self, job_id: str, count: int) -> list[str]:
        if count == 1:
            return [job_id]
        base = job_id.removesuffix("[]")
        return [f"{base}[{i}]" for i in range(self.first_index, self.first_index + count)]

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        # Torque writes <job name>.o<sequence number> into the -o directory; an array
        # element's file is <job name>.o<sequence>-<index>.
        seq = re.search(r"\d+", job_id)
        if seq is None:
            raise BackendError(f"msub returned a job id without a number: {job_id!r}")
        if req.count == 1:
            return [f"{req.log_dir}/{req.name}.o{seq.group()}"]
        return [f"{req.log_dir}/{req.name}.o{seq.group()}-{i}"
                for i in range(self.first_index, self.first_index + req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        return ["showq", "--xml"]  # every job we may see; ended ones are read from their files

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        return [["canceljob", *ids]]

    def list_command(self, user: str) -> list[str]:
        return ["showq", "--xml", "-w", f"user={user}"]

    def parse_listing(self, out: str) -> list[Listed]:
        try:
            root = ET.fromstring(out)
        except ET.ParseError as e:
            raise BackendError(f"showq --xml printed something that is not XML: {out[:200]!r}") from e
        listed = []
        for job in root.iter("job"):
            element = job.get("JobID", "")
            if not element:
                continue
            state = job.get("State", "")
            if state in _MOAB_RUNNING:
                phase, reason = Phase.RUNNING, ""
            elif state in _MOAB_ENDED:
                code = job.get("CompletionCode", "0")
                phase = Phase.GONE if code in ("", "0") else Phase.FAILED
                reason = "" if phase is Phase.GONE else f"{state} (completion code {code})"
            else:  # Idle, Hold, UserHold, SystemHold, BatchHold, Deferred, Blocked, Staged...
                why = job.get("BlockReason") or job.get("EState") or ""
                phase, reason = Phase.PENDING, f"{state} ({why})" if why and why != state else state
                if state == "Deferred" and job.get("BlockReason") == "BadCredentials":
                    phase = Phase.FAILED
            listed.append(Listed(element, job.get("JobName", ""), phase, reason))
        return listed


# --------------------------------------------------------------------------------------
# OAR (documented output): oarsub -S / oarstat -J / oardel
# --------------------------------------------------------------------------------------

_OAR_PENDING = {"Waiting", "Hold", "toLaunch", "toAckReservation", "Launching", "Suspended",
                "Resuming"}
_OAR_RUNNING = {"Running", "Finishing"}


class OAR(System):
    """OAR: ``#OAR`` lines read by ``oarsub -S`` (scan the script), resources as
    ``-l /nodes=1/core=N,walltime=...`` on one line (several ``-l`` lines would make a
    moldable job), arrays as ``--array N`` (each element gets a job id of its own: all of
    them are kept, comma-separated, as the submission's id), status from ``oarstat -J``."""

    name = "oar"
    directive = "#OAR"
    index_var = "${OAR_ARRAY_INDEX}"
    # OAR reads one colon as hours:minutes ([hour:mn:sec|hour:mn|hour]).
    walltime_colon = "hours:minutes"
    submit_binary = "oarsub"
    submit_argv = ("oarsub", "-S")
    job_id_regexp = r"OAR_JOB_ID=(\d+)"
    cancel_argv = ("oardel",)

    def directives(self, req: JobRequest) -> list[str]:
        o = req.options
        d = self.directive
        log = self.word(req, self.log_dir(req) + "/%jobid%.out", "log_directory")
        lines = [f"{d} -n {self.word(req, req.name, 'name')}", f"{d} -O {log}", f"{d} -E {log}"]
        if req.count > 1:
            lines.append(f"{d} --array {req.count}")
        if o.queue:
            lines.append(f"{d} -q {self.word(req, o.queue, 'queue')}")
        project = getattr(o, "project", None) or o.account
        if project:
            lines.append(f"{d} --project {self.word(req, project, 'project')}")
        spec = getattr(o, "resource_spec", None) or f"/nodes=1/core={req.cores}"
        if req.walltime:
            spec += f",walltime={req.walltime}"
        lines.append(f"{d} -l {self.word(req, spec, 'resource_spec')}")
        prop = getattr(o, "memory_per_core_property_name", None)
        if req.memory and prop and prop != "not_applicable":
            mib = math.ceil(req.memory / (max(1, req.cores) * 2**20))
            lines.append(f"{d} -p {self.word(req, f'{prop}>={mib}', 'memory_per_core_property_name')}")
        return lines

    def parse_submit(self, out: str) -> str:
        ids = re.findall(self.job_id_regexp, out)
        if not ids:
            raise BackendError(f"could not read a job id from oarsub's output: {out!r}")
        return ",".join(ids)

    def element_ids(self, job_id: str, count: int) -> list[str]:
        ids = job_id.split(",")
        if len(ids) != count:
            raise BackendError(f"oarsub returned {len(ids)} job ids for an array of {count}: {job_id}")
        return ids

    def log_paths(self, req: JobRequest, job_id: str) -> list[str]:
        return [f"{req.log_dir}/{e}.out" for e in self.element_ids(job_id, req.count)]

    def status_command(self, name: str, job_ids: Sequence[str]) -> list[str]:
        # oarstat answers for ended jobs too when asked by id.
        return ["oarstat", "-f", "-J", *(a for j in job_ids for a in ("-j", j))]

    def stop_commands(self, ids: Sequence[str], grace: float) -> list[list[str]]:
        return [["oardel", *ids]]

    def list_command(self, user: str) -> list[str]:
        return ["oarstat", "-f", "-J", "-u", user]

    def parse_listing(self, out: str) -> list[Listed]:
        try:
            jobs = json.loads(out or "{}")
        except ValueError as e:
            raise BackendError(f"oarstat -J printed something that is not JSON: {out[:200]!r}") from e
        if not isinstance(jobs, dict):
            raise BackendError(f"oarstat -J printed {type(jobs).__name__}, not an object: {out[:200]!r}")
        listed = []
        for element, attrs in jobs.items():
            if not isinstance(attrs, dict):
                continue
            state = str(attrs.get("state", ""))
            code = attrs.get("exit_code")
            if state in _OAR_RUNNING:
                phase, reason = Phase.RUNNING, ""
            elif state == "Terminated":
                failed = code not in (None, 0, "0")
                phase, reason = (Phase.FAILED, f"exit code {code}") if failed else (Phase.GONE, "")
            elif state in ("Error", "toError"):
                phase, reason = Phase.FAILED, f"{state}: {attrs.get('message', '')}".rstrip(": ")
            else:
                phase = Phase.PENDING
                reason = f"{state}: {attrs.get('message', '')}".rstrip(": ") if state else "unknown"
            listed.append(Listed(str(attrs.get("Job_Id", element)), str(attrs.get("name") or ""),
                                 phase, reason))
        return listed


SYSTEMS: dict[str, System] = {s.name: s for s in (Slurm(), PBS(), SGE(), LSF(), HTCondor(),
                                                   Moab(), OAR())}
