"""The hostsnap lab: a real libvirt + QEMU + guest-agent + Ceph stack on one Debian 12 host.

Everything it makes lives under one state directory and only loopback addresses are used.
"""
