"""Where a store is, as it may be shown: a PostgreSQL URL's password masked."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit


def is_postgres_url(url: str) -> bool:
    """Whether a storage URL names a PostgreSQL database rather than a SQLite file."""
    return url.startswith(("postgresql://", "postgres://"))


def shown(location: str) -> str:
    """A store's location as it may be printed: a URL's password masked."""
    if not is_postgres_url(location):
        return location
    parts = urlsplit(location)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = urlencode([(name, "***" if name == "password" else value)
                       for name, value in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def passwords(location: str) -> list[str]:
    """The secrets a location carries (as written and decoded), to mask wherever they may show."""
    if not is_postgres_url(location):
        return []
    parts = urlsplit(location)
    found = [parts.password or ""] + [value for name, value in parse_qsl(parts.query) if name == "password"]
    return [s for secret in found if secret for s in {secret, unquote(secret)}]


def masked(text: str, locations: tuple[str, ...]) -> str:
    for location in locations:
        text = text.replace(location, shown(location))
        for secret in passwords(location):
            text = text.replace(secret, "***")
    return text


def reason(err: BaseException, locations: tuple[str, ...]) -> str:
    """An error in a few words, with no password in them."""
    return masked(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__, locations)


