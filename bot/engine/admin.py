"""What admins may do through the engine facade: move credits, fetch a past video."""

from __future__ import annotations

from bot.credits import Credits
from bot.engine.results import Results
from bot.jobs import Balance, Rejected, UserRef, Video


class AdminActions:
    """Credits granted or set by an admin, and past videos fetched again; ``Engine`` inherits these."""

    credits: Credits
    results: Results

    async def fetch_video(self, user: UserRef, job_id: int) -> Video | Rejected:
        """A past video of the user's, downloaded again to post (the caller deletes the file)."""
        return await self.results.fetch_video(user, job_id)

    async def grant(self, user: UserRef, credits: int, by: str = "") -> Balance:
        """Add lasting bonus credits (negative takes them away, not below zero)."""
        return await self.credits.grant(user, credits, by)

    async def set_credits(self, user: UserRef, credits: int, by: str = "") -> Balance:
        """Set what a user has right now: today's allowance, the rest as bonus."""
        return await self.credits.set_credits(user, credits, by)
