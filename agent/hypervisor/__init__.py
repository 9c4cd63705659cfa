"""Adapters to the outside systems. Only these modules import libvirt, rados or rbd, or run
qemu-img."""
