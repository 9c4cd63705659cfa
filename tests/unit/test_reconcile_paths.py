"""From an agent's active image to CloudStack's volume path: only a path that can be
justified (the recorded image, or hostsnap's overlay of the volume's original, in the
volume's pool) is given out."""

from __future__ import annotations

import pytest

from controller.agents import AgentVolume
from controller.inventory import StoragePool, Volume
from controller.reconcile import PathRefused, cloudstack_path, same_volume
from controller.reconcile.disks import match_disks

ID1, ID2 = "a" * 32, "b" * 32
NFS = StoragePool("pool-uuid", "nfs", "NetworkFilesystem", "/export/primary", "", "z", "Up", "")
SMP = StoragePool("smp-uuid", "smp", "SharedMountPoint", "/var/lib/pool", "", "z", "Up", "")
RBD = StoragePool("rbd-uuid", "ceph", "RBD", "rbd", "", "z", "Up", "")


def test_a_file_volume_records_the_overlays_file_name_within_the_pool():
    assert (
        cloudstack_path(f"/mnt/pool-uuid/vol.hostsnap-{ID1}", NFS, "vol") == f"vol.hostsnap-{ID1}"
    )
    assert cloudstack_path(f"/var/lib/pool/vol.hostsnap-{ID1}", SMP, "vol") == f"vol.hostsnap-{ID1}"
    assert cloudstack_path("/mnt/pool-uuid/vol", NFS, "vol") == "vol"


def test_a_later_overlay_of_the_same_original_is_justified():
    recorded = f"vol.hostsnap-{ID1}"
    assert cloudstack_path(f"/mnt/pool-uuid/vol.hostsnap-{ID2}", NFS, recorded) == (
        f"vol.hostsnap-{ID2}"
    )


def test_an_absolute_recorded_path_stays_absolute():
    path = cloudstack_path(f"/data/vols/vol.hostsnap-{ID1}", SMP, "/data/vols/vol")
    assert path == f"/data/vols/vol.hostsnap-{ID1}"


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (f"/var/tmp/vol.hostsnap-{ID1}", "outside pool"),
        (f"/mnt/other-pool/vol.hostsnap-{ID1}", "outside pool"),
        ("/mnt/pool-uuid/other-volume", "neither the recorded"),
        ("/mnt/pool-uuid/vol.hostsnap-nothex", "neither the recorded"),
        (f"/mnt/pool-uuid/vol.hostsnap-{ID1}.hostsnap-{ID2}", "neither the recorded"),
        ("vol.qcow2", "not an absolute"),
    ],
)
def test_an_image_that_cannot_be_justified_is_refused(image, why):
    with pytest.raises(PathRefused, match=why):
        cloudstack_path(image, NFS, "vol")


def test_rbd_volumes_keep_their_image_and_any_other_is_refused():
    assert cloudstack_path("rbd/vol", RBD, "vol") == "vol"
    with pytest.raises(PathRefused, match="not the recorded"):
        cloudstack_path("rbd/other", RBD, "vol")
    with pytest.raises(PathRefused, match="not in Ceph pool"):
        cloudstack_path("elsewhere/vol", RBD, "vol")


def test_no_recorded_path_gives_nothing_to_compare_with():
    with pytest.raises(PathRefused):
        cloudstack_path("/mnt/pool-uuid/vol", NFS, "")


def test_same_volume_follows_overlays_of_one_original():
    assert same_volume(f"/mnt/p/vol.hostsnap-{ID2}", f"vol.hostsnap-{ID1}")
    assert same_volume("rbd/vol", "vol")
    assert not same_volume("/mnt/p/other", "vol")


def _volume(vid: str, path: str, device: int) -> Volume:
    return Volume(vid, vid, "DATADISK", "Ready", "vm", device, "p", "p", path, None, 1, "z")


def test_disks_pair_by_name_first_then_by_device_id():
    volumes = [_volume("v0", "root", 0), _volume("v1", "data", 1), _volume("v2", "gone", 2)]
    disks = [
        AgentVolume("d", "vda", "/mnt/p/something-else"),
        AgentVolume("d", "vdb", f"/mnt/p/root.hostsnap-{ID1}"),
    ]
    found = match_disks(volumes, disks)
    assert found["v0"].disk is not None and found["v0"].disk.target == "vdb"
    assert found["v0"].by_name
    assert found["v1"].disk is None  # vdb is taken by name; nothing at device 1 is left
    assert found["v2"].disk is None
