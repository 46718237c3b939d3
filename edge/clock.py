"""Time as a Pi without a real-time clock knows it.

Until NTP syncs, the wall clock may be days off (or at 1970), so every segment also carries
CLOCK_BOOTTIME and the boot id: together they order segments within a boot whatever the
wall clock said, and ``clock_synced`` tells which wall times to trust.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class SystemClock:
    def wall(self) -> datetime:
        return datetime.now(timezone.utc).astimezone()

    def boottime(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def boot_id(self) -> str:
        try:
            return BOOT_ID.read_text().strip()
        except OSError:
            return "unknown"

    def synced(self) -> bool:
        # systemd-timesyncd touches this file once it has synchronised the clock.
        return TIMESYNC_FLAG.exists()
