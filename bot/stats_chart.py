"""The /stats chart: jobs per day as bars and spend per day as a line, a PNG drawn with Pillow.

Pure drawing: it takes the days' figures and returns the image's bytes; what the days
hold is ``bot.engine.stats``'s, the words on it are ``bot.messages``'s.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from PIL import Image, ImageDraw, ImageFont

from bot import messages

WIDTH, HEIGHT = 900, 420
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 72, 48, 56
BACKGROUND, INK, GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
DELIVERED, OTHER, SPEND = (66, 133, 244), (190, 205, 230), (219, 68, 55)
TICKS = 4  # grid lines above the axis


@dataclass(frozen=True)
class ChartDay:
    """One bar and one point of the chart."""

    label: str  # the day, e.g. "11-20"
    jobs: int
    delivered: int
    spend_usd: Decimal


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's own TrueType font (with FreeType)
    except (TypeError, OSError):  # an older Pillow or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _nice_top(value: float) -> float:
    """The axis' top: the value rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def draw_chart(days: Sequence[ChartDay]) -> bytes:
    """A PNG of ``days`` (oldest first): bars of jobs (delivered in the darker part), the
    spend in USD as a line on the right-hand axis, dates below, a legend on top."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    pen = ImageDraw.Draw(image)
    small, title = _font(13), _font(16)
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    most = max((day.jobs for day in days), default=0)
    jobs_top = float(TICKS * math.ceil(max(most, 1) / TICKS))  # whole jobs on every grid line
    spend_top = _nice_top(float(max((day.spend_usd for day in days), default=Decimal(0))))
    for tick in range(TICKS + 1):
        y = bottom - (bottom - top) * tick / TICKS
        pen.line([(left, y), (right, y)], fill=GRID if tick else INK)
        pen.text((left - 8, y), f"{jobs_top * tick / TICKS:g}", fill=INK, font=small, anchor="rm")
        pen.text((right + 8, y), f"${spend_top * tick / TICKS:.2f}", fill=SPEND, font=small, anchor="lm")
    pen.line([(left, top), (left, bottom)], fill=INK)
    pen.line([(right, top), (right, bottom)], fill=INK)
    slot = (right - left) / max(len(days), 1)
    points = []
    for n, day in enumerate(days):
        x0, x1 = left + n * slot + slot * 0.18, left + (n + 1) * slot - slot * 0.18
        height = (bottom - top) * day.jobs / jobs_top
        done = (bottom - top) * day.delivered / jobs_top
        if height:
            pen.rectangle([(x0, bottom - height), (x1, bottom)], fill=OTHER)
        if done:
            pen.rectangle([(x0, bottom - done), (x1, bottom)], fill=DELIVERED)
        middle = (x0 + x1) / 2
        pen.text((middle, bottom + 8), day.label, fill=INK, font=small, anchor="mt")
        points.append((middle, bottom - (bottom - top) * float(day.spend_usd) / spend_top))
    if len(points) > 1:
        pen.line(points, fill=SPEND, width=3)
    for x, y in points:
        pen.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=SPEND)
    pen.text((WIDTH / 2, 16), messages.chart_title(len(days)), fill=INK, font=title, anchor="mt")
    pen.text((left, top - 8), messages.CHART_JOBS_AXIS, fill=DELIVERED, font=small, anchor="lb")
    pen.text((right, top - 8), messages.CHART_SPEND_AXIS, fill=SPEND, font=small, anchor="rb")
    pen.text((WIDTH / 2, HEIGHT - 8), messages.CHART_DAYS_AXIS, fill=INK, font=small, anchor="mb")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
