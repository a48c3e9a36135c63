"""Per-job containment: cgroups, resource limits, and the subreaper's duties.

Apart from `process` because it is host policy (which hierarchy, which controller, what may be
created where), while `process` is the lifecycle of one run; the runner asks this package for a
`JobBox` per run and otherwise only kills, watches and removes it.

* `detect`  - where our cgroup sits in each mounted hierarchy (never an assumed path).
* `cgfs`    - the cgroup file operations (read, write, procs, kill, remove).
* `limits`  - `Limits`, the ceilings and the enforcement plan (`limits_enforced`).
* `box`     - `JobBox`: one job's cgroups, placement before exec, what it hit, removal.
* `parent`  - `Containment`: the service's own cgroups, the mechanism in force, boxes.
* `reaper`  - `AdoptionReaper`: reap adopted zombies, end adopted processes that outlive
              their job (the fallback's sweep).
"""

from .box import JobBox
from .limits import NAMES, LimitError, Limits, plan
from .parent import Containment, ContainmentError
from .reaper import AdoptionReaper

__all__ = ["NAMES", "AdoptionReaper", "Containment", "ContainmentError", "JobBox", "LimitError",
           "Limits", "plan"]
