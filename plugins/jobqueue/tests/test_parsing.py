"""Reading what the systems' commands print: submit, status and listing output.

SLURM's samples were recorded from the real slurmctld 22.05 these tests start; the sge
backend runs against a real Grid Engine in test_conformance.py. PBS Pro, LSF, HTCondor,
Moab and OAR are not packaged for Debian, so their samples follow the formats their
documentation shows (``qstat -f -F json``, ``bjobs -o``, ``condor_q -af:j``, ``showq
--xml``, ``oarstat -f -J``); the SLURM and SGE runs check the same code paths for real.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from dask_deploy import BackendError, ClusterSpec, Handle, Phase
from dask_deploy_jobqueue._backend import JobqueueBackend, _last_error
from dask_deploy_jobqueue._options import SLURMOptions
from dask_deploy_jobqueue._systems import SYSTEMS, JobRequest, parse_job_name
from hypothesis import given
from hypothesis import strategies as hst

S = SYSTEMS


def req(system: str, count: int) -> JobRequest:
    return JobRequest("dask-deploy.c1.worker", "/logs/c1", count, 1, None, None, SLURMOptions())


# -- SLURM (recorded) -------------------------------------------------------------------

SQUEUE = """\
1_2|CANCELLED|None|dask-deploy.rec.worker
1_10|PENDING|Resources|dask-deploy.rec.worker
2|PENDING|Priority|dask-deploy.rec.worker
4|PENDING|JobHeldUser|dask-deploy.rec.scheduler
1_9|RUNNING|None|dask-deploy.rec.worker
7|COMPLETED|None|dask-deploy.rec.worker
8|FAILED|NonZeroExitCode|dask-deploy.rec.worker
9|PENDING|PartitionTimeLimit|dask-deploy.rec.worker
10|COMPLETING|None|dask-deploy.rec.worker
"""


def test_slurm_submit_and_elements() -> None:
    slurm = S["slurm"]
    assert slurm.parse_submit("1234\n") == "1234"
    assert slurm.parse_submit("1234;cluster2\n") == "1234"
    with pytest.raises(BackendError, match="sbatch"):
        slurm.parse_submit("sbatch: error: Batch job submission failed: Invalid partition\n")
    assert slurm.element_ids("55", 3) == ["55_1", "55_2", "55_3"]
    assert slurm.element_ids("56", 1) == ["56"]
    assert slurm.log_paths(req("slurm", 2), "55") == ["/logs/c1/55_1.out", "/logs/c1/55_2.out"]
    assert slurm.log_paths(req("slurm", 1), "56") == ["/logs/c1/56.out"]


def test_slurm_status() -> None:
    st = S["slurm"].parse_status(SQUEUE)
    assert st["1_9"] == (Phase.RUNNING, "")
    assert st["10"] == (Phase.RUNNING, "")
    assert st["1_10"] == (Phase.PENDING, "PENDING (Resources)")
    assert st["2"] == (Phase.PENDING, "PENDING (Priority)")
    assert st["7"] == (Phase.GONE, "")
    assert st["8"] == (Phase.FAILED, "FAILED (NonZeroExitCode)")
    assert st["1_2"] == (Phase.FAILED, "CANCELLED")
    # a pending reason that waiting cannot fix fails the job at once
    assert st["9"] == (Phase.FAILED, "PENDING (PartitionTimeLimit)")


def test_slurm_status_query_is_by_name() -> None:
    # squeue -j refuses the whole query when one id has been purged ("Invalid job id")
    cmd = S["slurm"].status_command("dask-deploy.c1.worker", ["1_1", "2"])
    assert "--name=dask-deploy.c1.worker" in cmd and not any(c.startswith("-j") for c in cmd)


def test_slurm_stop_is_graceful() -> None:
    stop = S["slurm"].stop_commands(["5_1", "6"], 10)
    assert ["scancel", "--state=PENDING", "5_1", "6"] in stop
    assert ["scancel", "--batch", "--signal=TERM", "--state=RUNNING", "5_1", "6"] in stop
    assert S["slurm"].kill_commands(["5_1"]) == [["scancel", "5_1"]]


def test_job_names_carry_the_cluster() -> None:
    assert parse_job_name("dask-deploy.my-cluster.worker") == ("my-cluster", "worker")
    assert parse_job_name("dask-deploy.c.scheduler") == ("c", "scheduler")
    assert parse_job_name("dask-deploy.c.worker[1-4]") == ("c", "worker")  # LSF arrays
    assert parse_job_name("dask-worker") is None
    assert parse_job_name("dask-deploy.c.other") is None


# -- PBS Pro / OpenPBS ------------------------------------------------------------------

QSTAT_JSON = """{
    "timestamp":1764136300,
    "pbs_version":"22.05.11",
    "pbs_server":"pbs01",
    "Jobs":{
        "101[].pbs01":{
            "Job_Name":"dask-deploy.c1.worker",
            "job_state":"B",
            "array":"True",
            "array_indices_submitted":"1-3"
        },
        "101[1].pbs01":{"Job_Name":"dask-deploy.c1.worker","job_state":"R"},
        "101[2].pbs01":{"Job_Name":"dask-deploy.c1.worker","job_state":"Q",
                        "comment":"Not Running: Insufficient amount of resource: ncpus"},
        "101[3].pbs01":{"Job_Name":"dask-deploy.c1.worker","job_state":"F","Exit_status":271},
        "102.pbs01":{"Job_Name":"dask-deploy.c1.worker","job_state":"F","Exit_status":0},
        "103.pbs01":{"Job_Name":"dask-deploy.c1.scheduler","job_state":"E"}
    }
}"""


def test_pbs() -> None:
    pbs = S["pbs"]
    assert pbs.parse_submit("101[].pbs01\n") == "101[].pbs01"
    assert pbs.parse_submit("102.pbs01\n") == "102.pbs01"
    assert pbs.element_ids("101[].pbs01", 2) == ["101[1].pbs01", "101[2].pbs01"]
    assert pbs.log_paths(req("pbs", 2), "101[].pbs01") == [
        "/logs/c1/dask-deploy.c1.worker.o101.1", "/logs/c1/dask-deploy.c1.worker.o101.2"]
    assert pbs.status_command("n", ["101[1].pbs01", "101[2].pbs01", "102.pbs01"]) == [
        "qstat", "-f", "-F", "json", "-x", "-t", "101[].pbs01", "102.pbs01"]
    st = pbs.parse_status(QSTAT_JSON)
    assert "101[].pbs01" not in st  # the array itself is not an element
    assert st["101[1].pbs01"] == (Phase.RUNNING, "")
    assert st["101[2].pbs01"] == (Phase.PENDING, "Not Running: Insufficient amount of resource: ncpus")
    assert st["101[3].pbs01"] == (Phase.FAILED, "exit status 271")
    assert st["102.pbs01"] == (Phase.GONE, "")
    assert st["103.pbs01"] == (Phase.RUNNING, "")
    assert pbs.partial_answer("", "qstat: Unknown Job Id 99.pbs01")
    assert not pbs.partial_answer("", "Connection refused")
    with pytest.raises(BackendError, match="JSON"):
        pbs.parse_status("qstat: cannot connect to server")


# -- Torque-style servers: the pbs backend's other dialect ------------------------------

#: Recorded from slurm-wlm-torque's qstat -f over the test SLURM (one queued, one cancelled
#: job: C without an exit status), then a real Torque's completed jobs (documented format:
#: 4-space indent, exit_status, a comment wrapped onto a tab-indented line).
QSTAT_TORQUE = """\
Job Id:\t1
\tJob_Name = dask-deploy.t1.worker
\tJob_Owner = root@localhost
\tjob_state = Q
\tqueue = debug
\tqtime = Wed Dec  2 19:17:30 2026
\tResource_List.ncpus = 1

Job Id:\t2
\tJob_Name = dask-deploy.t1.worker
\tJob_Owner = root@localhost
\tjob_state = C
\tctime = Wed Dec  2 19:17:30 2026

Job Id: 3.torque01
    Job_Name = dask-deploy.t1.worker
    Job_Owner = alice@login01
    job_state = C
    exit_status = 271
Job Id: 4.torque01
    Job_Name = dask-deploy.t1.scheduler
    Job_Owner = bob@login01
    job_state = H
    comment = held by user bo
\tb
Job Id: 5.torque01
    Job_Name = dask-deploy.t1.worker
    Job_Owner = alice@login01
    job_state = C
    exit_status = 0
"""


def test_torque() -> None:
    from dask_deploy_jobqueue._systems import TORQUE

    assert TORQUE.arrays is False and TORQUE.submit_in_log_dir and TORQUE.name == "pbs"
    assert not S["pbs"].submit_in_log_dir and not S["slurm"].submit_in_log_dir
    assert TORQUE.parse_submit("17\n") == "17"  # the wrappers: SLURM's job id
    assert TORQUE.parse_submit("17.torque01\n") == "17.torque01"
    assert TORQUE.submit_command_for(req("pbs", 1), "/l/j.sh") == [
        "qsub", "-N", "dask-deploy.c1.worker", "-j", "oe", "/l/j.sh"]
    from dask_deploy_jobqueue._options import PBSOptions

    r = JobRequest("dask-deploy.c1.worker", "/logs/c1", 1, 2, 2**30, None, PBSOptions())
    assert "#PBS -l nodes=1:ppn=2,mem=1024mb" in TORQUE.header(r)  # no PBS Pro select=
    assert "#PBS -l x=1" in TORQUE.header(dataclasses.replace(r, options=PBSOptions(resource_spec="x=1")))
    assert TORQUE.log_paths(req("pbs", 1), "17.torque01") == ["/logs/c1/dask-deploy.c1.worker.o17"]
    assert TORQUE.status_command("n", ["1", "2"]) == ["qstat", "-f", "1", "2"]
    st = TORQUE.parse_status(QSTAT_TORQUE)
    assert st["1"] == (Phase.PENDING, "Q")
    assert "2" not in st  # C without exit_status: judged by the job's output file
    assert st["3.torque01"] == (Phase.FAILED, "exit status 271")
    assert st["4.torque01"] == (Phase.PENDING, "H (held by user bob)")
    assert st["5.torque01"] == (Phase.GONE, "")
    owners = {j.element: j.owner for j in TORQUE.parse_listing(QSTAT_TORQUE)}
    assert owners == {"1": "root", "3.torque01": "alice", "4.torque01": "bob", "5.torque01": "alice"}
    # the wrappers' qstat exits 153 with nothing on stderr when it knows none of the ids
    assert TORQUE.partial_answer("", "") and TORQUE.partial_answer("", "qstat: Unknown Job Id 9.t")
    assert not TORQUE.partial_answer("", "Problem loading jobs.")
    assert TORQUE.stop_commands(["1"], 5.0) == [["qdel", "1"]]
    assert TORQUE.parse_status("qstat: cannot connect to server") == {}


@given(hst.text())
def test_qstat_full_text_never_raises(text: str) -> None:
    from dask_deploy_jobqueue._systems import TORQUE, parse_qstat_full

    for job in parse_qstat_full(text):
        assert "Job Id" in job
    TORQUE.parse_listing(text)


# -- Grid Engine ------------------------------------------------------------------------

QSTAT_XML = """<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>12</JB_job_number>
      <JAT_prio>0.55500</JAT_prio>
      <JB_name>dask-deploy.c1.worker</JB_name>
      <JB_owner>alice</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-26T05:51:44</JAT_start_time>
      <queue_name>all.q@node1</queue_name>
      <slots>1</slots>
      <tasks>1</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>12</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>dask-deploy.c1.worker</JB_name>
      <JB_owner>alice</JB_owner>
      <state>qw</state>
      <JB_submission_time>2026-11-26T05:51:40</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
      <tasks>2-6:2</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>13</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>dask-deploy.c1.scheduler</JB_name>
      <JB_owner>alice</JB_owner>
      <state>Eqw</state>
      <JB_submission_time>2026-11-26T05:51:41</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"""


def test_sge() -> None:
    sge = S["sge"]
    assert sge.parse_submit("12.1-6:1\n") == "12"
    assert sge.parse_submit("14\n") == "14"
    assert sge.element_ids("12", 3) == ["12.1", "12.2", "12.3"]
    assert sge.log_paths(req("sge", 1), "14") == ["/logs/c1/14.out"]
    listed = {j.element: j for j in sge.parse_listing(QSTAT_XML)}
    assert listed["12.1"].phase is Phase.RUNNING
    assert [e for e in listed if e.startswith("12.")] == ["12.1", "12.2", "12.4", "12.6"]
    assert listed["12.4"].phase is Phase.PENDING and listed["12.4"].reason == "qw"
    assert listed["13"].phase is Phase.FAILED and "Eqw" in listed["13"].reason
    assert listed["13"].name == "dask-deploy.c1.scheduler"


# -- LSF --------------------------------------------------------------------------------

BJOBS = """\
3001|RUN|-|1|dask-deploy.c1.worker[1]|-
3001|PEND|-|2|dask-deploy.c1.worker[2]|New job is waiting for scheduling;
3001|EXIT|127|3|dask-deploy.c1.worker[3]|-
3002|DONE|-|0|dask-deploy.c1.worker|-
Job <2999> is not found
"""


def test_lsf() -> None:
    lsf = S["lsf"]
    assert lsf.parse_submit("Job <3001> is submitted to queue <normal>.\n") == "3001"
    assert lsf.submit_stdin and lsf.submit_command("/x/job.sh") == ["bsub"]
    assert lsf.element_ids("3001", 2) == ["3001[1]", "3001[2]"]
    assert lsf.log_paths(req("lsf", 1), "3002") == ["/logs/c1/3002.0.out"]
    assert lsf.status_command("n", ["3001[1]", "3001[2]", "3002"])[-2:] == ["3001", "3002"]
    st = lsf.parse_status(BJOBS)
    assert st["3001[1]"] == (Phase.RUNNING, "")
    assert st["3001[2]"] == (Phase.PENDING, "New job is waiting for scheduling;")
    assert st["3001[3]"] == (Phase.FAILED, "EXIT (exit code 127)")
    assert st["3002"] == (Phase.GONE, "")
    assert len(st) == 4
    assert lsf.partial_answer("", "Job <2999> is not found")


# -- HTCondor ---------------------------------------------------------------------------

CONDOR_Q = """\
77.0 2 undefined "dask-deploy.c1.worker" undefined
77.1 1 undefined "dask-deploy.c1.worker" undefined
77.2 5 undefined "dask-deploy.c1.worker" Error from slot1@node3: Failed to execute '/x/job.sh'
77.3 4 1 "dask-deploy.c1.worker" undefined
78.0 4 0 "dask-deploy.c1.worker" undefined
"""


def test_htcondor() -> None:
    condor = S["htcondor"]
    assert condor.parse_submit("Submitting job(s)...\n3 job(s) submitted to cluster 77.\n") == "77"
    assert condor.element_ids("77", 3) == ["77.0", "77.1", "77.2"]
    assert condor.status_command("n", ["77.0", "77.1", "78.0"])[:3] == ["condor_q", "77", "78"]
    st = condor.parse_status(CONDOR_Q)
    assert st["77.0"] == (Phase.RUNNING, "")
    assert st["77.1"] == (Phase.PENDING, "")
    assert st["77.2"] == (Phase.FAILED, "held: Error from slot1@node3: Failed to execute '/x/job.sh'")
    assert st["77.3"] == (Phase.FAILED, "exit code 1")
    assert st["78.0"] == (Phase.GONE, "")
    assert {j.name for j in condor.parse_listing(CONDOR_Q)} == {"dask-deploy.c1.worker"}


# -- Moab (documented: showq --xml, one <queue> per class of jobs) ---------------------

SHOWQ_XML = """\
<Data><Object>queue</Object><cluster LocalActiveNodes="1" LocalIdleNodes="3" LocalUpProcs="16" \
time="1700000100"></cluster>
<queue count="2" option="active">
<job AWDuration="100" Class="batch" DRMJID="4001[1].head" GJID="4001[1]" Group="users" \
JobID="4001[1]" JobName="dask-deploy.c1.worker" MasterHost="node01" PAL="torque" ReqProcs="1" \
StartTime="1700000000" State="Running" SubmissionTime="1699999990" User="alice"></job>
<job JobID="4003" JobName="dask-deploy.c1.scheduler" State="Starting" User="alice"></job>
</queue>
<queue count="1" option="eligible">
<job JobID="4001[2]" JobName="dask-deploy.c1.worker" State="Idle" StartPriority="1" \
User="alice"></job>
</queue>
<queue count="2" option="blocked">
<job BlockReason="IdlePolicy" EState="Deferred" JobID="4001[3]" JobName="dask-deploy.c1.worker" \
State="Deferred" User="alice"></job>
<job EState="BatchHold" JobID="4002" JobName="other" State="BatchHold" User="alice"></job>
</queue>
<queue count="2" option="completed">
<job CompletionCode="0" JobID="3999" JobName="dask-deploy.c1.worker" State="Completed"></job>
<job CompletionCode="271" JobID="3998" JobName="dask-deploy.c1.worker" State="Removed"></job>
</queue>
</Data>
"""


def test_moab() -> None:
    moab = S["moab"]
    assert moab.parse_submit("\nMoab.12\n") == "Moab.12"
    assert moab.parse_submit("4001\n") == "4001"
    with pytest.raises(BackendError, match="msub"):
        moab.parse_submit("ERROR:  cannot submit job - no queue\nmsub: job rejected\n")
    assert moab.submit_command("/x/job.sh") == ["msub", "/x/job.sh"]
    assert moab.element_ids("4001", 2) == ["4001[1]", "4001[2]"]
    assert moab.element_ids("Moab.12", 1) == ["Moab.12"]
    assert moab.log_paths(req("moab", 2), "4001") == ["/logs/c1/dask-deploy.c1.worker.o4001-1",
                                                      "/logs/c1/dask-deploy.c1.worker.o4001-2"]
    assert moab.log_paths(req("moab", 1), "Moab.12") == ["/logs/c1/dask-deploy.c1.worker.o12"]
    st = moab.parse_status(SHOWQ_XML)
    assert st["4001[1]"] == (Phase.RUNNING, "")
    assert st["4003"] == (Phase.RUNNING, "")
    assert st["4001[2]"] == (Phase.PENDING, "Idle")
    assert st["4001[3]"] == (Phase.PENDING, "Deferred (IdlePolicy)")
    assert st["4002"] == (Phase.PENDING, "BatchHold")
    assert st["3999"] == (Phase.GONE, "")
    assert st["3998"] == (Phase.FAILED, "Removed (completion code 271)")
    assert moab.stop_commands(["4001[1]"], 5) == [["canceljob", "4001[1]"]]
    assert moab.list_command("alice") == ["showq", "--xml", "-w", "user=alice"]
    names = {j.element: j.name for j in moab.parse_listing(SHOWQ_XML)}
    assert parse_job_name(names["4003"]) == ("c1", "scheduler")
    with pytest.raises(BackendError, match="not XML"):
        moab.parse_listing("ERROR: cannot connect to Moab server")


# -- OAR (documented: oarsub prints OAR_JOB_ID= lines, oarstat -J a JSON object) ---------

OARSUB_ARRAY = """\
[ADMISSION RULE] Modify resource description with type constraints
OAR_JOB_ID=5001
OAR_JOB_ID=5002
OAR_JOB_ID=5003
OAR_ARRAY_ID=5001
"""

OARSTAT_J = """\
{
   "5001" : {"Job_Id" : 5001, "array_id" : 5001, "array_index" : 1, "exit_code" : null,
             "message" : "R=4,W=1:0:0,J=B (Karma=0.000,quota_ok)",
             "name" : "dask-deploy.c1.worker", "owner" : "alice", "queue" : "default",
             "state" : "Running"},
   "5002" : {"Job_Id" : 5002, "array_index" : 2, "exit_code" : null,
             "message" : "Karma=0.000,quota_ok", "name" : "dask-deploy.c1.worker",
             "state" : "Waiting"},
   "5003" : {"Job_Id" : 5003, "array_index" : 3, "exit_code" : 256, "message" : "",
             "name" : "dask-deploy.c1.worker", "state" : "Terminated"},
   "5004" : {"Job_Id" : 5004, "exit_code" : 0, "name" : "dask-deploy.c1.scheduler",
             "state" : "Terminated"},
   "5005" : {"Job_Id" : 5005, "exit_code" : null, "message" : "Cannot launch the job",
             "name" : "dask-deploy.c1.worker", "state" : "Error"},
   "5006" : {"Job_Id" : 5006, "name" : null, "state" : "Finishing"}
}
"""


def test_oar() -> None:
    oar = S["oar"]
    assert oar.parse_submit("OAR_JOB_ID=5004\n") == "5004"
    assert oar.parse_submit(OARSUB_ARRAY) == "5001,5002,5003"
    assert oar.element_ids("5001,5002,5003", 3) == ["5001", "5002", "5003"]
    with pytest.raises(BackendError, match="3 job ids for an array of 2"):
        oar.element_ids("5001,5002,5003", 2)
    with pytest.raises(BackendError, match="oarsub"):
        oar.parse_submit("[ADMISSION RULE] Error: walltime too long\n")
    assert oar.submit_command("/x/job.sh") == ["oarsub", "-S", "/x/job.sh"]
    assert oar.log_paths(req("oar", 2), "5001,5002") == ["/logs/c1/5001.out", "/logs/c1/5002.out"]
    assert oar.status_command("n", ["5001", "5002"]) == ["oarstat", "-f", "-J", "-j", "5001",
                                                         "-j", "5002"]
    st = oar.parse_status(OARSTAT_J)
    assert st["5001"] == (Phase.RUNNING, "")
    assert st["5002"] == (Phase.PENDING, "Waiting: Karma=0.000,quota_ok")
    assert st["5003"] == (Phase.FAILED, "exit code 256")
    assert st["5004"] == (Phase.GONE, "")
    assert st["5005"] == (Phase.FAILED, "Error: Cannot launch the job")
    assert st["5006"] == (Phase.RUNNING, "")
    assert oar.parse_status("{}") == {}
    assert oar.list_command("alice") == ["oarstat", "-f", "-J", "-u", "alice"]
    assert {j.name for j in oar.parse_listing(OARSTAT_J)} == {
        "dask-deploy.c1.worker", "dask-deploy.c1.scheduler", ""}
    for bad in ("oarstat: cannot connect to the database", "[1, 2]"):
        with pytest.raises(BackendError, match="oarstat"):
            oar.parse_listing(bad)


# -- how an ended job's output file is read ---------------------------------------------


def handle(log: str, submitted: float = 0.0) -> Handle:
    return Handle("slurm", "c1", "c1-0", "5", {"log": log, "job": "dask-deploy.c1.worker",
                                              "submitted": submitted})


def test_status_from_the_output_file(tmp_path: object) -> None:
    backend = JobqueueBackend(ClusterSpec(backend="slurm", name="c1",
                                          backend_options=SLURMOptions(log_directory=str(tmp_path))))
    ok = f"{tmp_path}/ok.out"
    with open(ok, "w") as f:
        f.write("worker output\ndask-deploy: job finished (exit 0)\n")
    assert backend._status_from_log(handle(ok)).phase is Phase.GONE
    bad = f"{tmp_path}/bad.out"
    with open(bad, "w") as f:
        f.write("/x/job.sh: line 9: /nope/python: No such file or directory\n"
                "dask-deploy: job finished (exit 127)\n")
    status = backend._status_from_log(handle(bad))
    assert status.phase is Phase.FAILED
    assert status.reason == "exit code 127: /x/job.sh: line 9: /nope/python: No such file or directory"
    killed = f"{tmp_path}/killed.out"
    with open(killed, "w") as f:
        f.write("worker output\nslurmstepd: error: *** JOB 5 ON n1 CANCELLED AT 2026-01-01T00:00:00 "
                "DUE TO TIME LIMIT ***\n")
    status = backend._status_from_log(handle(killed))
    assert status.phase is Phase.FAILED and "DUE TO TIME LIMIT" in status.reason
    # not listed and no output yet: just submitted (queue listings may lag), else gone
    missing = f"{tmp_path}/missing.out"
    assert backend._status_from_log(handle(missing, time.time())).phase is Phase.PENDING
    assert backend._status_from_log(handle(missing, 0.0)).phase is Phase.GONE


def test_last_error_prefers_error_lines() -> None:
    text = "a\nValueError: bad thing\nINFO - End worker\ndask-deploy: job finished (exit 1)\n"
    assert _last_error(text) == "ValueError: bad thing"
    assert _last_error("just this\n") == "just this"
    assert _last_error("") == "no output"


@pytest.mark.parametrize(("version", "dialect"), [
    ("pbs_version = 22.05.11", "PBS"),  # PBS Pro / OpenPBS
    ("Version: 6.1.3\nCommit: 0fd6a6b", "Torque"),  # Torque
    ("", "Torque")])  # SLURM's wrappers: "Unknown option: version" on stderr, exit 2
def test_pbs_dialect_from_qstat_version(version: str, dialect: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    qstat = tmp_path / "qstat"
    qstat.write_text(f"#!/bin/sh\nprintf '%s\\n' '{version}'\n[ -n '{version}' ] || exit 2\n")
    qstat.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    backend = JobqueueBackend(ClusterSpec(backend="pbs", name="d"))
    assert type(asyncio.run(backend._dialect())).__name__ == dialect
    qstat.unlink()  # asked once per cluster
    assert type(asyncio.run(backend._dialect())).__name__ == dialect
