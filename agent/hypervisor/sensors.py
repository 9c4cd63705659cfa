"""Host temperatures from the kernel's sysfs: hwmon chips and thermal zones.

The sysfs root is configurable so tests can present a real-format tree (psutil reads the same
files but only under /sys). Values are millidegrees Celsius in the files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Temperature:
    # The chip or zone and its name ("hwmon0:coretemp", "thermal_zone0:x86_pkg_temp"): unique
    # on a host with two sockets or several drives of one kind.
    sensor: str
    label: str  # "Core 0", "temp1", the zone's type
    celsius: float
    high: float | None = None
    critical: float | None = None


def _millidegrees(path: Path) -> float | None:
    try:
        return int(path.read_text().strip()) / 1000
    except (OSError, ValueError):
        return None


def _text(path: Path, default: str) -> str:
    try:
        return path.read_text().strip() or default
    except OSError:
        return default


def read_temperatures(sysfs: Path = Path("/sys")) -> list[Temperature]:
    """Every temperature the kernel exposes; empty when the host has no sensors."""
    found = []
    for chip in sorted((sysfs / "class" / "hwmon").glob("hwmon*")):
        name = _text(chip / "name", chip.name)
        for reading in sorted(chip.glob("temp*_input")):
            base = reading.name.removesuffix("_input")
            celsius = _millidegrees(reading)
            if celsius is None:
                continue
            found.append(
                Temperature(
                    sensor=f"{chip.name}:{name}",
                    label=_text(chip / f"{base}_label", base),
                    celsius=celsius,
                    high=_millidegrees(chip / f"{base}_max"),
                    critical=_millidegrees(chip / f"{base}_crit"),
                )
            )
    for zone in sorted((sysfs / "class" / "thermal").glob("thermal_zone*")):
        celsius = _millidegrees(zone / "temp")
        if celsius is None:
            continue
        trips = {
            _text(zone / f"trip_point_{n}_type", ""): _millidegrees(zone / f"trip_point_{n}_temp")
            for n in range(len(list(zone.glob("trip_point_*_type"))))
        }
        zone_type = _text(zone / "type", zone.name)
        found.append(
            Temperature(
                sensor=f"{zone.name}:{zone_type}",
                label=zone_type,
                celsius=celsius,
                high=trips.get("hot") or trips.get("passive"),
                critical=trips.get("critical"),
            )
        )
    return found
