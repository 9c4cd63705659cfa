"""hostsnap-agent: the snapshot service of one KVM host."""

__version__ = "0.1.0"
