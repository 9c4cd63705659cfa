"""A CloudStack API simulator for the controller's tests: a real HTTP server speaking the
subset of the API the controller uses (lists, tags, updateVolume, async jobs), with
CloudStack's signature checks, response shapes, paging and faults on demand."""

from .auth import VERIFY_FAILED, java_url_encoder
from .seed import Disk, LabDisk, add_vm
from .server import CloudStackSimulator, SimRequest
from .world import Host, Pool, Project, VirtualMachine, Volume, World, Zone, make_id

__all__ = [
    "VERIFY_FAILED",
    "CloudStackSimulator",
    "Disk",
    "Host",
    "LabDisk",
    "Pool",
    "Project",
    "SimRequest",
    "VirtualMachine",
    "Volume",
    "World",
    "Zone",
    "add_vm",
    "java_url_encoder",
    "make_id",
]
