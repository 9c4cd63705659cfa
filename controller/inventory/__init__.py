"""CloudStack's view of the zone: records (`model`) and the refreshing `Inventory`."""

from controller.cloudstack.projects import ListSource
from controller.inventory.model import (
    BUSY_VOLUME_STATES,
    FILE_POOL_TYPES,
    Host,
    InventorySnapshot,
    InventoryStatus,
    StoragePool,
    VirtualMachine,
    Volume,
    Zone,
)
from controller.inventory.refresh import Inventory, InventoryUnavailable

__all__ = [
    "BUSY_VOLUME_STATES",
    "FILE_POOL_TYPES",
    "Host",
    "Inventory",
    "InventorySnapshot",
    "InventoryStatus",
    "InventoryUnavailable",
    "ListSource",
    "StoragePool",
    "VirtualMachine",
    "Volume",
    "Zone",
]
