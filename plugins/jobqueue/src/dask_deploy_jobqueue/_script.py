"""The body of a job script: which unit am I, start its workers, leave cleanly on SIGTERM.

The body is the same on every system; only the header (directives) and the variable that
holds the array index differ (:mod:`._systems`). It is plain bash and needs only the
Python environment with ``distributed`` on the compute nodes, like dask-jobqueue's.

What the body does, and why:

* An array element maps its index to its unit's name (``case``), so that each element's
  workers join the scheduler under the names the core expects (``<unit><suffix>``).
* All of the unit's worker processes (``processes`` per job) run in the background, and
  the shell waits for them. When one fails, the others are stopped and the job exits with
  that code, so the batch system marks the job FAILED and the core replaces the unit as a
  whole, instead of a half-working job lingering.
* SIGTERM (our graceful stop) is forwarded once to every worker; they leave and the shell
  exits 0, so the batch system records the job as COMPLETED, not CANCELLED or FAILED. A
  worker still there after the grace period is killed by the script (a ``--no-nanny``
  worker that is told to close by its scheduler and signalled at the same moment can hang
  at exit), so the job still ends by itself, COMPLETED.
* The last line of the output file is ``dask-deploy: job finished (exit N)``: the backend
  reads it to tell a clean end from a failure after the system has forgotten the job.
* TLS material is never in the script: it references files in a 0700 directory.
* No option becomes shell: every value in the body is quoted with :func:`shlex.quote`
  (environment values, the interpreter, each worker argument), and variable names are
  plain names. The one exception is ``job_script_prologue``: its lines *are* shell (as in
  dask-jobqueue), written as given. Header values are checked and quoted by
  :mod:`._systems`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from dask_deploy import SpecError

from ._options import check_directive

__all__ = ["NAME", "TRAILER", "TRAILER_RE", "body"]

#: The line a finished job prints last (``{code}`` is its exit code).
TRAILER = "dask-deploy: job finished (exit {code})"
TRAILER_RE = r"dask-deploy: job finished \(exit (-?\d+)\)"
#: Placeholder in a worker's argv for its name, ``"${UNIT}<suffix>"`` in the script.
NAME = "\0name"


def quote(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def assign(key: str, value: str) -> str:
    """``KEY=<quoted value>``; a key that is not a plain variable name is refused (the
    spec refuses it first: this is the last line of defence before the shell)."""
    if not _VARIABLE.match(key):
        raise SpecError(f"env[{key!r}]", key, "a variable name must match "
                        "[A-Za-z_][A-Za-z0-9_]*: rename the variable")
    return f"{key}={shlex.quote(value)}"


def command_word(program: str) -> str:
    """The program of a command line, always quoted unless it is an absolute path: a bare
    word could be a reserved word (``if``) or read as an assignment (``A=b``)."""
    word = shlex.quote(program)
    return word if word != program or program.startswith("/") else f"'{program}'"


def body(*, cluster: str, index_var: str | None, first_index: int, units: Sequence[str],
         prologue: Sequence[str], env: Mapping[str, str], grace: float,
         commands: Sequence[tuple[str, Mapping[str, str], list[str]]],
         stop_signals: Sequence[str] = ("TERM", "INT")) -> list[str]:
    """The script lines after the header.

    ``commands`` holds one ``(name suffix, extra env, argv)`` per worker process; the
    argument :data:`NAME` in ``argv`` becomes ``"${UNIT}<suffix>"``. ``units`` are the unit
    names by array element (one name: a plain job). Workers that have not left ``grace``
    seconds after SIGTERM are killed by the script itself, which still exits 0.
    ``stop_signals`` are the signals that mean "stop gracefully" (Grid Engine adds USR2,
    which ``qdel`` sends to a ``-notify`` job before its SIGKILL).
    """
    check_directive(cluster, "name")  # it is in a comment line
    lines = [f"# dask-deploy: cluster {cluster}, {len(units)} job(s) of {len(commands)} "
             "worker process(es)"]
    if len(units) == 1:
        lines.append(f"UNIT={shlex.quote(units[0])}")
    else:
        lines.append(f'case "{index_var}" in')
        lines += [f"  {first_index + i}) UNIT={shlex.quote(u)} ;;" for i, u in enumerate(units)]
        lines += ['  *) echo "dask-deploy: no unit for array index ' + (index_var or "") + '"; exit 1 ;;',
                  "esac"]
    lines += list(prologue)  # shell by definition (module load, source activate...)
    lines += [f"export {assign(k, v)}" for k, v in {"DASK_DEPLOY_CLUSTER": cluster, **env}.items()]
    ticks = max(1, round(grace * 10))
    # Each worker leads its own process group (setsid: no job control here, so the
    # background child is not a group leader and setsid does not fork: its pid is the
    # group's id). Signals go to the whole group, so what a task started goes with it.
    lines += ["stopping=", "pids=", "all=", "reaper=",
              "SETSID=; command -v setsid >/dev/null 2>&1 && SETSID=setsid",
              "signal() { for p in $2; do kill -$1 -- -$p 2>/dev/null || kill -$1 $p 2>/dev/null; done; }",
              "stop() {",
              "  stopping=1",
              '  echo "dask-deploy: stopping (SIGTERM to the workers, SIGKILL after '
              f'{grace:g}s)"',
              "  signal TERM \"$pids\"",
              f"  (for _ in $(seq {ticks}); do sleep 0.1; done; signal KILL \"$all\") &",
              "  reaper=$!",
              "}",
              f"trap stop {' '.join(stop_signals)}"]
    for suffix, extra_env, argv in commands:
        name = '"${UNIT}"' + (shlex.quote(suffix) if suffix else "")
        # Assignments before the command, not `env K=V cmd`: env would take a program
        # path holding "=" for one more assignment.
        prefix = "".join(assign(k, v) + " " for k, v in extra_env.items())
        words = " ".join([command_word(argv[0]),
                          *(name if a == NAME else shlex.quote(a) for a in argv[1:])])
        lines += [f"{prefix}$SETSID {words} &",
                  'pids="$pids $!"; all="$all $!"']
    lines += [
        '[ -n "$stopping" ] && stop  # stopped while starting: reach the workers started since',
        "status=0",
        "while [ -n \"$pids\" ]; do",
        "  wait -n; rc=$?  # a worker ended, a trapped signal came, or no child is left (127)",
        "  left=; ended=",
        "  for p in $pids; do",
        "    if kill -0 \"$p\" 2>/dev/null; then left=\"$left $p\"; else ended=\"$ended $p\"; fi",
        "  done",
        "  if [ -z \"$ended\" ]; then",
        "    [ \"$rc\" = 127 ] || continue  # a signal: no worker ended",
        "    ended=$pids; left=  # none left, though kill -0 did not see the end yet",
        "  fi",
        "  pids=$left",
        "  for p in $ended; do",
        "    # Its own status, which the shell keeps: wait -n's rc may be another worker's, or",
        "    # 127 for one that ended before wait -n was called (both seen with bash 5.2).",
        "    wait \"$p\"; rc=$?",
        "    signal KILL $p  # its leftovers",
        "    if [ \"$rc\" -ne 0 ] && [ -z \"$stopping\" ] && [ \"$status\" = 0 ]; then",
        "      status=$rc; signal TERM \"$pids\"  # one worker failed: end the job",
        "    fi",
        "  done",
        "done",
        '[ -n "$reaper" ] && kill "$reaper" 2>/dev/null',
        'signal KILL "$all"  # what the workers started ends with the job',
        f'echo "{TRAILER.format(code="$status")}"',
        "exit $status",
    ]
    return lines
