"""hostsnap-controller: coordinates the agents of a CloudStack zone."""

__version__ = "0.1.0"
