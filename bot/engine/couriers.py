"""The couriers adapters register, called through typed methods.

Progress and failure notices are best effort: a chat that misbehaves or hangs must
not break the job, so errors are logged and a slow call is abandoned. Progress is
not even waited for: a slow edit must not delay noticing that the video is ready
(the reports start in the order they were made, and a chat courier lets the newest
text win). Delivery is not best effort: its errors reach the pipeline, which retries
or fails the job (or, when the chat refuses it for good, keeps it: ``refused``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from bot.jobs import Courier, Job, Progress, Video

log = logging.getLogger(__name__)

COURIER_TIMEOUT = 30.0  # a progress or failure message that hangs is skipped
REFUSED_TIMEOUT = 600.0  # a refused video may be uploaded privately: as long as a delivery may take


class Couriers:
    """One courier per platform."""

    def __init__(self) -> None:
        self._by_platform: dict[str, Courier] = {}
        self._reports: set[asyncio.Task[None]] = set()  # progress reports under way

    def register(self, platform: str, courier: Courier) -> None:
        self._by_platform[platform] = courier

    @property
    def platforms(self) -> list[str]:
        return list(self._by_platform)

    def serves(self, platform: str) -> bool:
        return platform in self._by_platform

    async def progress(self, job: Job, update: Progress) -> None:
        """Report progress without waiting for the chat (see the module docstring)."""
        courier = self._by_platform.get(job.platform)
        if courier is not None:
            report = asyncio.create_task(self._best_effort(job, "progress", courier.progress(job, update)))
            self._reports.add(report)
            report.add_done_callback(self._reports.discard)
            # One turn of the loop: the report starts now, so its text is set before any
            # later message of the job (a chat's newest-wins order, a console's lines).
            await asyncio.sleep(0)

    async def settle(self) -> None:
        """Let the progress reports under way finish (or time out); for a clean stop."""
        if self._reports:
            await asyncio.gather(*self._reports, return_exceptions=True)

    async def fail(self, job: Job, reason: str) -> None:
        courier = self._by_platform.get(job.platform)
        if courier is not None:
            await self._best_effort(job, "fail", courier.fail(job, reason))

    async def cancelled(self, job: Job, text: str) -> None:
        courier = self._by_platform.get(job.platform)
        if courier is not None:
            await self._best_effort(job, "cancelled", courier.cancelled(job, text))

    async def refused(self, job: Job, video: Video, days: int) -> None:
        """Tell the owner where a refused video is (best effort: the chat refuses already)."""
        courier = self._by_platform.get(job.platform)
        if courier is not None:
            await self._best_effort(job, "refused", courier.refused(job, video, days), within=REFUSED_TIMEOUT)

    async def alert_admins(self, text: str) -> None:
        """Tell the admins of every platform (a courier's optional ``alert_admins``: a
        Discord admin channel, Telegram's admins), best effort, all at once."""
        alerts = {platform: alert for platform, courier in self._by_platform.items()
                  if (alert := getattr(courier, "alert_admins", None)) is not None}
        outcomes = await asyncio.gather(*(alert(text) for alert in alerts.values()), return_exceptions=True)
        for platform, outcome in zip(alerts, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("admin alert on %s failed (%s: %s)", platform, type(outcome).__name__, outcome)

    async def deliver(self, job: Job, video: Video) -> None:
        """Hand the video to the job's courier; errors are the caller's to handle."""
        await self._by_platform[job.platform].deliver(job, video)

    @staticmethod
    async def _best_effort(job: Job, what: str, call: Awaitable[None], within: float = COURIER_TIMEOUT) -> None:
        try:
            async with asyncio.timeout(within):
                await call
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("job %s: courier %s failed (%s: %s)", job.id, what, type(err).__name__, err)
