"""Benchmarks: hostsnap against the raw tools (virsh, qemu-img, rbd) measured in the same run."""
