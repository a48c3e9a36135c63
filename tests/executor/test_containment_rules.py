"""The pure parts of containment: finding our cgroups from what the kernel shows (layouts of
other hosts, written as the kernel writes them), and the limits plan (ceilings, enforcers)."""

from __future__ import annotations

import os

import pytest

from cc_executor.containment import LimitError, Limits, plan
from cc_executor.containment.detect import find, mounts, own_paths

HYBRID_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"
HYBRID_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids\n"
    "41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw\n")
# A systemd service on a pure v2 host, and a container that sees only its own subtree (the
# mount root is its cgroup; /proc/self/cgroup shows the path from the host's root).
PURE_CGROUP = "0::/system.slice/cc.service\n"
PURE_MOUNTINFO = "25 21 0:22 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
CONTAINER_CGROUP = "0::/kubepods/pod1/c1\n"
CONTAINER_MOUNTINFO = "600 590 0:22 /kubepods/pod1/c1 {root} ro - cgroup2 cgroup rw\n"


def _tree(tmp_path, dirs):
    for d in dirs:
        os.makedirs(tmp_path / d, exist_ok=True)
        (tmp_path / d / "cgroup.procs").write_text("")


def _find(tmp_path, cgroup, mountinfo):
    (tmp_path / "cgroup").write_text(cgroup)
    (tmp_path / "mountinfo").write_text(mountinfo.format(root=tmp_path / "fs"))
    return find(str(tmp_path / "cgroup"), str(tmp_path / "mountinfo"))


def test_a_hybrid_host_gives_the_unified_tree_and_the_v1_memory_and_pids_dirs(tmp_path):
    _tree(tmp_path, ["fs/memory/process_api/abc", "fs/pids", "fs/unified"])
    h = _find(tmp_path, HYBRID_CGROUP, HYBRID_MOUNTINFO)
    assert h.v2 == str(tmp_path / "fs/unified")
    assert h.v1 == {"memory": str(tmp_path / "fs/memory/process_api/abc"),
                    "pids": str(tmp_path / "fs/pids")}


def test_a_pure_v2_host_gives_the_services_own_cgroup(tmp_path):
    _tree(tmp_path, ["fs/system.slice/cc.service"])
    h = _find(tmp_path, PURE_CGROUP, PURE_MOUNTINFO)
    assert h.v2 == str(tmp_path / "fs/system.slice/cc.service") and h.v1 == {}


def test_a_mount_root_below_the_hierarchy_root_is_taken_into_account(tmp_path):
    _tree(tmp_path, ["fs"])
    assert _find(tmp_path, CONTAINER_CGROUP, CONTAINER_MOUNTINFO).v2 == str(tmp_path / "fs")
    # Our cgroup outside what the mount shows: not reachable, so not used.
    assert _find(tmp_path, "0::/elsewhere\n", CONTAINER_MOUNTINFO).v2 is None


def test_nothing_mounted_or_nothing_there_means_no_hierarchy(tmp_path):
    assert _find(tmp_path, HYBRID_CGROUP, "").v2 is None
    h = _find(tmp_path, HYBRID_CGROUP, HYBRID_MOUNTINFO)  # mounts listed, directories absent
    assert h.v2 is None and h.v1 == {}


def test_parsers_read_the_kernels_formats():
    assert own_paths("4:memory,memsw:/a b\n0::/\nbad\n") == {"memory": "/a b", "memsw": "/a b",
                                                              "": "/"}
    assert mounts("1 2 0:3 / /x\\040y rw - cgroup2 cgroup2 rw\n") == {"": ("/", "/x y")}


ENFORCERS = {"memory_mb": "cgroup_v1_memory", "processes": "cgroup_v1_pids",
             "cpu_seconds": "rlimit_cpu", "open_files": "rlimit_nofile", "output_mb": "runner"}


def test_the_plan_grants_what_is_asked_and_names_each_enforcer():
    limits, enforced = plan(Limits(memory_mb=64, output_mb=0.5), {}, ENFORCERS)
    assert limits == Limits(memory_mb=64, output_mb=0.5)
    assert enforced == {"memory_mb": {"value": 64, "by": "cgroup_v1_memory"},
                        "output_mb": {"value": 0.5, "by": "runner"}}
    assert plan(None, {}, ENFORCERS) == (Limits(), {})


def test_a_ceiling_bounds_the_ask_and_is_the_limit_of_a_job_that_asks_for_none():
    ceilings = {"processes": 100, "memory_mb": 0}
    assert plan(Limits(processes=100), ceilings, ENFORCERS)[0].processes == 100
    assert plan(None, ceilings, ENFORCERS)[0] == Limits(processes=100)
    with pytest.raises(LimitError) as over:
        plan(Limits(processes=101), ceilings, ENFORCERS)
    assert (over.value.name, over.value.ceiling) == ("processes", "max_processes")
    assert "101 is over the server's ceiling of 100 (max_processes)" in str(over.value)


def test_a_limit_nothing_enforces_is_refused_not_ignored():
    with pytest.raises(LimitError) as cannot:
        plan(Limits(memory_mb=64), {}, {"output_mb": "runner"})
    assert cannot.value.name == "memory_mb" and cannot.value.ceiling is None
    assert "cannot enforce" in str(cannot.value)
